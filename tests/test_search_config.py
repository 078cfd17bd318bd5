"""One source of truth for search options: the CLI flags come from SearchConfig's fields, choices from the
registries, objective specs from the typed union (and specs stored by earlier versions still read)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mixatlas.cli import app
from mixatlas.errors import MixAtlasError
from mixatlas.executors import EXECUTOR_KINDS
from mixatlas.objectives.registry import OBJECTIVE_KINDS, ProxySpec, parse_objective_spec, spec_dict
from mixatlas.search.config import SearchConfig
from mixatlas.search.methods import METHODS, make_optimizer
from mixatlas.search.setup import open_study


def _search_params() -> dict[str, object]:
    command = typer.main.get_command(app).commands["search"]
    return {param.name: param for param in command.params}


def test_every_config_field_is_a_search_flag_with_its_help() -> None:
    params = _search_params()
    extras = {name: field.json_schema_extra or {} for name, field in SearchConfig.model_fields.items()}
    yaml_only = {name for name, extra in extras.items() if "flag" in extra and extra["flag"] is None}
    assert yaml_only == {"method_options"}
    assert set(params) == {"config"} | set(SearchConfig.model_fields) - yaml_only
    for name, field in SearchConfig.model_fields.items():
        if name in params:
            assert field.description and params[name].help.startswith(field.description.rstrip("."))
    assert params["minimize"].opts == ["--minimize"] and params["minimize"].secondary_opts == ["--maximize"]


def test_choices_come_from_the_registries() -> None:
    params = _search_params()
    for name, kinds in (("method", METHODS), ("objective", OBJECTIVE_KINDS), ("executor", EXECUTOR_KINDS)):
        assert all(kind in params[name].help for kind in kinds), name
    assert typing.get_args(SearchConfig.model_fields["executor"].annotation) == EXECUTOR_KINDS


def test_a_flag_reaches_the_config_and_the_study(tmp_path: Path) -> None:
    study = tmp_path / "s.db"
    run = CliRunner().invoke(app, ["search", "--synthetic", "task", "--method", "random", "--budget", "2",
                                   "--seed", "3", "--study", str(study), "--trial-seeds", "shared"])
    assert run.exit_code == 0, run.output
    opened, _ = open_study(SearchConfig(study=study))
    assert (opened.method, opened.budget, opened.seed) == ("random", 2, 3)
    assert opened.meta["trial_seeds"] == "shared" and opened.count("done") == 2
    opened.close()


def test_objective_specs_round_trip_as_stored_before() -> None:
    stored = [
        {"kind": "synthetic", "space_mode": "task", "seed": 0, "noise": None},
        {"kind": "pool", "path": "/x/runs.csv", "weight_cols": "w_", "target": None},
        {"kind": "command", "argv": ["python", "train.py", "{trial_dir}"]},
        {"kind": "callable", "function": "pkg.mod:fn"},
        {"kind": "proxy", "config": {"steps": 6}, "atlas": "/x/atlas"},
    ]
    for spec in stored:
        assert spec_dict(parse_objective_spec(spec)) == spec
    assert isinstance(parse_objective_spec(stored[-1]), ProxySpec)
    with pytest.raises(MixAtlasError, match="callable objective spec misses 'function'"):
        parse_objective_spec({"kind": "callable"})
    with pytest.raises(MixAtlasError, match="unknown; choose one of command"):
        parse_objective_spec({"kind": "notebook"})


def test_method_registry_is_lazy_and_checked() -> None:
    assert all(":" in path for path in METHODS.values())
    assert type(make_optimizer("random")).__name__ == "RandomSearch"
    with pytest.raises(MixAtlasError, match="unknown search method 'nope'"):
        make_optimizer("nope")

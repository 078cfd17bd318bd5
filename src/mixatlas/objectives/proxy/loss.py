"""The proxy's training loss without full-vocabulary logits: chunked linear cross-entropy on answer tokens.

A LLaVA batch of B x L tokens supervises only the assistant answers (a few percent of the tokens), yet
`LlavaForConditionalGeneration(labels=...)` projects every position onto the whole vocabulary and keeps
the fp32 logits for backward (B x L x V: 25.5 GiB for 64 x 704 x 151936). Here the final hidden states
are gathered at the supervised positions only, projected `chunk` rows at a time, and each chunk's
gradient is computed in the forward pass (the fused linear cross-entropy of Liger-Kernel, written with
plain torch ops so it runs on CPU and GPU alike): peak extra memory is `chunk x V` floats.
"""

from __future__ import annotations

from typing import Any

from mixatlas.objectives.proxy.tokenizer import IGNORE_INDEX

DEFAULT_CHUNK = 4096  # rows of logits in flight: 4096 x 151936 fp32 = 2.3 GiB


def _linear_cross_entropy_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """sum_i CE(hidden_i @ weight.T, target_i) / n, gradients computed chunk by chunk in forward."""

        @staticmethod
        def forward(ctx, hidden_nh, weight_vh, target_n, chunk: int):
            n = hidden_nh.shape[0]
            accumulate = torch.promote_types(hidden_nh.dtype, torch.float32)  # fp32, or fp64 in tests
            total = torch.zeros((), dtype=accumulate, device=hidden_nh.device)
            grad_hidden = torch.empty_like(hidden_nh) if hidden_nh.requires_grad else None
            grad_weight = torch.zeros_like(weight_vh, dtype=accumulate) if weight_vh.requires_grad else None
            for start in range(0, n, chunk):
                h = hidden_nh[start : start + chunk]
                t = target_n[start : start + chunk]
                logits = (h @ weight_vh.T).to(accumulate)  # (c, V): matmul in the autocast / model dtype
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if grad_hidden is None and grad_weight is None:
                    continue
                probs = torch.exp_(logits.sub_(lse[:, None]))  # softmax, in place over the logits
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                grad_logits = probs.div_(n).to(h.dtype)
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = grad_logits @ weight_vh.to(h.dtype)
                if grad_weight is not None:
                    grad_weight += (grad_logits.T @ h).to(accumulate)
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.weight_dtype = weight_vh.dtype
            return total / n

        @staticmethod
        def backward(ctx, grad_output):
            grad_hidden, grad_weight = ctx.saved_tensors
            if grad_hidden is not None:
                grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
            if grad_weight is not None:
                grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
            return grad_hidden, grad_weight, None, None

    return LinearCrossEntropy


_FUNCTION: Any = None


def linear_cross_entropy(hidden_nh, weight_vh, target_n, chunk: int = DEFAULT_CHUNK):
    """Mean cross-entropy of `hidden_nh @ weight_vh.T` (n, V) against `target_n` (n,), never holding more than
    `chunk` rows of logits. hidden (n, H) and weight (V, H) may be bf16 (logits are upcast to fp32)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _linear_cross_entropy_function()
    return _FUNCTION.apply(hidden_nh, weight_vh, target_n, chunk)


def supervised_positions(labels_bl):
    """(rows, cols, targets) of every position whose next token is supervised: position t predicts label
    t + 1, as in `transformers`' causal-LM loss (the label shift)."""
    import torch

    nxt = labels_bl[:, 1:]
    rows, cols = torch.nonzero(nxt != IGNORE_INDEX, as_tuple=True)
    return rows, cols, nxt[rows, cols]


def proxy_loss(model, batch: dict, chunk: int = DEFAULT_CHUNK):
    """Mean next-token cross-entropy over the answer tokens of `batch` for a `LlavaForConditionalGeneration`.

    `batch`: input_ids / labels (B, L), pixel_values (n_images, 3, S, S), and either attention_mask (B, L)
    (padded rows) or position_ids (B, L) restarting at 0 for each packed sample (see `packing`). Equals
    `model(**batch).loss` without building the (B, L, V) logits.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = model.model(**inputs, use_cache=False).last_hidden_state  # (B, L, H)
    rows, cols, targets = supervised_positions(batch["labels"])
    if not len(targets):  # the caller's check normally prevents this; NaN like the reference 0/0
        return hidden.sum() * float("nan")
    head = model.get_output_embeddings()
    return linear_cross_entropy(hidden[rows, cols], head.weight, targets, chunk)


def loss_module(model):
    """An `nn.Module` around a Llava model whose `forward(**batch)` returns `proxy_loss(model, batch)`: the
    unit the trainer wraps in DDP (so gradient synchronisation sees the whole step)."""
    import torch

    class ProxyLoss(torch.nn.Module):
        def __init__(self, llava) -> None:
            super().__init__()
            self.llava = llava

        def forward(self, **batch):
            return proxy_loss(self.llava, batch)

    return ProxyLoss(model)

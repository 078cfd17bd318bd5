"""Turn a rendered image into one instruction sample of a given task, with varied prompt templates.

Templates imitate public datasets (COCO captions, TextVQA/OCR-VQA, RefCOCO, COCO/Objects365 detection,
VQAv2/GQA, ChartQA/DocVQA) so rule-based task typing meets realistic wording. Boxes are written in
`canvas.BOX_FORMAT`; detection answers are `label [x1, y1, x2, y2]; label [...]` sorted left to right.
"""

from __future__ import annotations

import random

from mixatlas.corpus.sample import GPT, HUMAN, IMAGE_PLACEHOLDER
from mixatlas.corpus.synth.canvas import Rendered, format_box, normalized_box

CAPTION_PROMPTS = (
    "Describe this {noun} briefly.",
    "Write a short caption for the {noun}.",
    "Provide a one-sentence caption for the provided image.",
    "Summarize the visual content of the image.",
    "Give a brief description of the {noun}.",
    "What is shown in this image? Describe it in one sentence.",
    "A short image caption:",
    "Generate a caption for this {noun}.",
)
OCR_PROMPTS = (
    "What text is written in the image?",
    "Read all the text in the {noun}.",
    "Transcribe the text shown in the image.",
    "OCR this {noun}.",
    "What does the text in the {noun} say?",
    "Extract all visible text, in reading order.",
    "Read out every word and number in the {noun}.",
    "What is written in this {noun}? Give the exact text.",
)
GROUNDING_PROMPTS = (
    "Please provide the bounding box coordinate of the region this sentence describes: {ref}.",
    "Where is {ref}? Answer with a box [x1, y1, x2, y2] in 0-1000 coordinates.",
    "Locate {ref} in the image.",
    "{Ref}.",
    "Find the region of {ref}.",
    "Give the bounding box of {ref}.",
    "Point out {ref} with a bounding box.",
)
DETECTION_PROMPTS = (
    "Detect all objects in the image and give their bounding boxes.",
    "List every object with its box as label [x1, y1, x2, y2].",
    "Find all labelled objects in the {noun} and output their locations.",
    "Output the bounding boxes of all objects.",
    "Detect each object in the {noun}; answer as label [box]; label [box].",
    "Locate all the objects and give the label and bounding box for each.",
)
VQA_SUFFIXES = (
    "",
    "\nAnswer the question using a single word or phrase.",
    " Answer with a single word or number.",
    " Short answer:",
    " Please answer briefly.",
)


def build_sample(task: str, rendered: Rendered, rng: random.Random) -> tuple[list[dict], dict]:
    """(LLaVA conversations, task-specific ground truth for `meta`) for one task on one image."""
    noun = rendered.noun
    truth: dict = {}
    if task == "captioning":
        prompt, answer = rng.choice(CAPTION_PROMPTS).format(noun=noun), rng.choice(rendered.captions)
    elif task == "ocr":
        prompt, answer = rng.choice(OCR_PROMPTS).format(noun=noun), rendered.ocr
    elif task == "grounding":
        target = rng.choice([obj for obj in rendered.objects if obj.refs])
        ref = rng.choice(target.refs)
        prompt = rng.choice(GROUNDING_PROMPTS).format(ref=ref, Ref=ref[0].upper() + ref[1:])
        answer = format_box(target.box)
        truth = {"ref": ref, "ref_label": target.label, "ref_box": normalized_box(target.box)}
    elif task == "detection":
        prompt = rng.choice(DETECTION_PROMPTS).format(noun=noun)
        ordered = sorted(rendered.objects, key=lambda obj: (obj.box[0], obj.box[1]))
        answer = "; ".join(f"{obj.label} {format_box(obj.box)}" for obj in ordered)
    elif task == "vqa":
        question, answer = rng.choice(rendered.qa)
        prompt = question + rng.choice(VQA_SUFFIXES)
        truth = {"question": question, "answer": answer}
    else:
        raise ValueError(f"unknown task {task!r}")
    human = f"{IMAGE_PLACEHOLDER}\n{prompt}" if rng.random() < 0.8 else f"{prompt}\n{IMAGE_PLACEHOLDER}"
    return [{"from": HUMAN, "value": human}, {"from": GPT, "value": answer}], truth

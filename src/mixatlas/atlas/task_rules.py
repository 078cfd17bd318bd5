"""Rules that type one (prompt, answer) turn from its wording and its answer's structure.

`classify_turn` returns `(task, rule)`: the task and the name of the rule that decided it. The rules run
in this order; the first that fires decides (docs/task-typing.md has the table with examples):

 1. `task-token`: a model's task prompt (Florence-2 `<OD>`, `<OCR>`, `<CAPTION>`..., MiniGPT-v2
    `[refer]`/`[detection]`, Kosmos-2 `<grounding>`, Qwen-VL `<ref>`, PaliGemma `caption en`/`ocr`/
    `detect cat ; dog`/`segment ...`).
 2. `detect-intent`: category-level, all-instance wording ("detect all instances of", "locate every
    instance of these categories", "检测图中所有...") with a box request, boxes in the answer or a detect
    verb -> detection, with or without boxes in the answer.
 3. `grounded-caption`: a describe request whose answer boxes its phrases (or asks for coordinates).
 4. `region-in-prompt`: a box, point, polygon or region token in the prompt -> grounding (region
    captioning, region questions).
 5. Boxes in the answer: `ocr-with-regions` (a reading prompt), `repeated-labels` (two boxes with one
    category label) and `many-boxes` (3+ boxes, no referred object) -> detection; else `box-in-answer`
    -> grounding (one or several referred objects). `point-in-answer`: points or region tokens.
 6. `detect-intent` again for a detect verb with no question ("Detect the cars.").
 7. `multiple-choice`: options (A. B. C. / "Answer with the option's letter") -> VQA.
 8. `locate-intent`: asks for the box / coordinates / location of a referred object -> grounding.
 9. `ocr-intent`: reading requests (OCR, transcribe, recognize the words, what is written, key-value
    extraction, convert the page to markdown/HTML/LaTeX, 识别文字...) -> OCR.
10. `caption-intent`: image-level description requests (describe/caption/summarize the image, analyze
    the image in detail, what's in the picture, 描述这张图片...) -> captioning.
11. `ocr-tokens`: a TextVQA-style "Reference OCR token" hint -> OCR.
12. `text-cue`: weaker reading cues (text on the sign, title of this book) -> OCR.
13. `question` (a question) -> VQA; `long-answer` (no question, a 40+ word answer) -> captioning;
    `default` -> VQA.

Text that is not the image's text is no reading cue: a passage in the prompt ("read the passage", "the
following text", 以下文本) and answer-format phrases ("without any additional text", "answer with a single
word", 用文字回答) are removed before the OCR cues are matched. Prompts are matched in lower case; the
decision for a (prompt, answer shape) pair is cached, since corpora repeat prompt templates.
"""

from __future__ import annotations

import functools
import re

# Rules whose decision is a guess rather than a cue: the audit lists their samples as low confidence.
LOW_CONFIDENCE_RULES = frozenset({"default", "long-answer", "text-cue", "many-boxes"})
RULES = (
    "task-token", "detect-intent", "region-in-prompt", "repeated-labels", "many-boxes", "ocr-with-regions",
    "grounded-caption", "box-in-answer", "point-in-answer", "locate-intent", "multiple-choice",
    "ocr-intent", "caption-intent", "ocr-tokens", "text-cue", "question", "long-answer", "default",
)

_I = re.IGNORECASE
_N = r"-?\d+(?:\.\d+)?"
# Every box / point / polygon syntax in public grounding and detection data.
_BOX_PATTERNS = (
    # [x1,y1,x2,y2], [x,y,w,h], (x1,y1,x2,y2), CogVLM [[..];[..]], Shikra [..;..]
    rf"[\[\(\{{;]\s*{_N}\s*,\s*{_N}\s*,\s*{_N}\s*,\s*{_N}\s*(?=[\]\)\}};])",
    rf"\(\s*{_N}\s*,\s*{_N}\s*\)\s*,?\s*\(\s*{_N}\s*,\s*{_N}\s*\)",  # (x1,y1),(x2,y2): Qwen-VL, Kosmos
    r"(?:<loc_?\d+>\s*){4}",  # Florence-2 <loc_12>, PaliGemma <loc0123>
    r"\{\s*(?:<\d+>\s*){4}\}",  # MiniGPT-v2 {<4><50><30><65>}
    r"(?:<patch_index_\d+>\s*){2}",  # Kosmos-2
    r"data-bbox\s*=\s*[\"']\s*\d+[\s,]+\d+[\s,]+\d+[\s,]+\d+",  # Qwen2.5-VL HTML parsing
    r"\"(?:bbox_2d|bbox|box_2d|bounding_box|box)\"\s*:\s*\[",  # JSON boxes
)
_BOX = re.compile("|".join(f"(?:{p})" for p in _BOX_PATTERNS))
_POINT = re.compile(
    r"<points?\b[^>]*\bx1?\s*=|<\|point_start\|>|<point>|\"point_2d\"\s*:"
    rf"|\[\s*0?\.\d+\s*,\s*0?\.\d+\s*\]"  # Shikra points [0.412,0.570]
    rf"|\[\s*\[\s*{_N}\s*,\s*{_N}\s*\]\s*(?:,\s*\[\s*{_N}\s*,\s*{_N}\s*\]\s*){{2,}}\]"  # polygon [[x,y],...]
    r"|<poly(?:gon)?>|(?:<loc_?\d+>\s*){6}",
    _I,
)
_REGION_TOKEN = re.compile(
    r"<\|box_start\|>|<box>|<bbox>|<quad>|<region\d*>|<mask>|<obj\d*>|<roi>|\bregion\s*\d+\b|\[region\]",
    _I,
)
_LABEL = re.compile(r"<ref>([^<]{1,60})</ref>|\"label\"\s*:\s*\"([^\"]{1,60})\""
                    r"|([A-Za-z][\w ]{0,30}?)\s*<loc|([A-Za-z][\w ]{0,30}?)\s*[:\[(]")

_TASK_TOKENS = (
    (re.compile(r"<(od|dense_region_caption|region_proposal|open_vocabulary_detection)>|\[detection\]"),
     "detection"),
    (re.compile(r"<(caption_to_phrase_grounding|referring_expression_segmentation|region_to_\w+)>"
                r"|\[(refer|grounding|identify|reg)\]|<grounding>|<phrase>|<\|object_ref_start\|>|<ref>"),
     "grounding"),
    (re.compile(r"<(ocr|ocr_with_region)>"), "ocr"),
    (re.compile(r"<(caption|detailed_caption|more_detailed_caption)>|\[caption\]"), "captioning"),
    (re.compile(r"\[vqa\]"), "vqa"),
)
# PaliGemma's task prefixes: "caption en", "ocr", "detect cat ; dog", "segment the left cup", "answer en ...".
_PALIGEMMA = re.compile(r"^(caption|describe|ocr|detect|segment|answer|question)(\s+[a-z]{2})?\b")

_DETECT = re.compile(
    r"\bobject detection\b"
    r"|\b(all|every|each)\s+(?!mentioned)(\w+\s+){0,2}?(instances?|objects?|items?|occurrences?)\b"
    r"|\b(categor(y|ies)|classes|class names?)\b(?=.{0,80}\b(box|boxes|bbox|coordinates?|locat\w*|positions?"
    r"|detect\w*)\b)"
    r"|\b(box|boxes|bbox|coordinates?|locat\w*|positions?|detect\w*)\b.{0,80}\b(categor(y|ies)|classes)\b"
    r"|\b(locate|detect|find|identify|mark|list)\s+(the\s+)?(objects|instances)\b"
    r"|\b(all|every|each)\b(?! the way\b| other\b| mentioned\b)|检测(?!框)|所有|全部|每(个|一个|一)",
    re.S,
)
_DETECT_VERB = re.compile(r"\bdetect(s|ing)?\b|检测")
# Wording that asks for the place of a referred object or region.
_REFER = re.compile(
    r"\b(referring expression|this sentence|referred)\b|\bbounding box(es)?\b|\bbbox(es)?\b|\bcoordinates?\b"
    r"|\blocate\b|\bground(ing|ed)?\b|(?<!does )(?<!do )\bpoint (to|at|out)\b(?!\s*[?？])|\bsegment\b|<p>"
    r"|\b(location|position|region|box)\b(?=.{0,60}\b(give|provide|output|return|mark|draw|answer)\b)"
    r"|\b(give|provide|output|return|mark|draw|find|identify|show|predict|determine)\b.{0,60}"
    r"\b(location|position|region|box)\b"
    r"|\bwhich (region|area|box|part of the image)\b"
    r"|边界框|坐标|框出|定位|检测框|标出|(指出|给出|输出)\S{0,20}位置",
    re.S,
)
_IMG = (r"(image|picture|photo\w*|pic|snapshot|scene|visual\w*|figure|frame|view|shot|screenshot|chart|"
        r"plot|graph|diagram|table|document|page|map|infographic|poster|meme|illustration|painting|artwork|"
        r"drawing|sketch|comic|slide|screen)")
_CAPTION = re.compile(
    rf"\bcaption\w*\b|\bdescrib\w*\b(?:\W+\w+){{0,4}}?\W+"
    rf"({_IMG[1:-1]}|it|contents?|everything|what you see)\b"
    r"|\b(describe|summari[sz]e|narrate|depict|portray)\b(\s+(it|this|in (great |full )?detail|briefly))?"
    r"\s*[.!:]?\s*$"
    r"|\b(description|summary|narrative|account|explanation|interpretation|overview|portrayal|depiction|"
    r"representation|rundown|breakdown|analysis)\b(?:\W+\w+){0,3}?\W+(of|for|on)\W+(?:\w+\W+){0,3}?"
    rf"{_IMG}\b"
    r"|\b(analy[sz]e|explain|interpret|elaborate on|detail|illustrate|characterize|summari[sz]e|narrate|"
    r"depict|portray|render|express|convert|transform)\b(?:\W+\w+){0,5}?\W+"
    rf"({_IMG[1:-1]}|visual (content|information|elements)|visuals)\b"
    r"|\bwhat('s| is| are|s)\s+(in|shown in|depicted in|present in|happening in|going on in|visible in|"
    rf"featured in)\s+(the|this|that|these)\s+{_IMG}\b(?! frame)"
    r"|\bwhat('s| is| are)\s+(happening|going on)\b"
    rf"|\bwhat (do|can) you see( happening)?( in (the|this) {_IMG})?\W*$|\bwhat can be seen\b"
    r"|\btell (me |us )?what you see\b"
    rf"|\bwhat (does|do) (the|this|these) {_IMG}s? "
    r"(show|depict|describe|illustrate|represent|portray|convey)\b"
    r"|\balt[- ]text\b"
    r"|\blist (all |every )?(of )?(the )?(objects|items|things|elements)\b(?=.{0,40}\b(in|see|visible)\b)"
    rf"|\bwhat is (this|the) {_IMG} (about|showing|of)\b"
    rf"|\b(tell|talk) (me |us )?about (the|this) {_IMG}\b"
    rf"|\b(key|main) (elements|features|points|objects) (in|of) (the|this) {_IMG}\b"
    r"|\bin words\b|\bimage (in|with) (great |full |fine )?detail\b"
    rf"|\b(details?|elements|contents?|aspects)\s+of\s+(the|this)\s+{_IMG}\b|\bshare (its|the) details\b"
    rf"|\b(narrative|description|summary|account|depiction)\b(?:\W+\w+){{0,3}}?\W+{_IMG}\b"
    rf"|\b{_IMG} (description|caption)\s*:|\b(going on|happening) in (the|this) {_IMG}\b"
    r"|\b(transcribe|turn|transform|convert|put) (the|this) (image|picture|photo) into\b"
    r"|描述|描绘|(介绍|概括|总结|说明|解释|讲讲|说说)\S{0,6}(图|照片|画面|内容)|(图|照片|画面)\S{0,4}(有什么|是什么内容)(东西)?\W?$|发生了什么"
    r"|看到了什么|标题|(图片|照片|图像|画面)\S{0,4}(展示|呈现)了?什么",
    0,
)
_BOX_REQUEST = re.compile(r"\bcoordinates?\b|\bbounding box(es)?\b|\bbbox(es)?\b|\bground(ing|ed)\b"
                          r"|坐标|边界框")
_CAPTION_NOT = re.compile(r"\b(describe|explain) (how|why|the (difference|relationship|process))\b")
_OCR = re.compile(
    r"\bocr\b(?!\s*tokens?)|\btranscri(be|ption|pt)\b(?!\W+(the )?(image|picture|photo)\W+into)"
    r"|\b(recogni[sz]e|read|spell|identify|extract|output|list|detect|copy|type|give)\s+(out\s+|off\s+|me\s+)?"
    r"(all\s+|every\s+|any\s+)?(of\s+)?(the\s+|this\s+|these\s+)?(visible\s+|printed\s+|handwritten\s+|"
    r"written\s+|main\s+)?(text|texts|words?|characters?|letters|digits|numbers|handwriting|formulas?|"
    r"equations?|math expressions?|scene text|license plates?|content of (the|this) (document|page))\b"
    r"|\b(what|which)\s+(text|words?|letters|characters|numbers?)\s+(is|are|does|do)\b"
    r"|\bread\s+(out\s+|aloud\s+)?(the\s+|this\s+|that\s+|these\s+)?(\w+\s+)?(signs?|labels?|plates?|boards?|"
    r"screens?|notes?|banners?|posters?|menus?|receipts?|documents?|pages?|titles?|names?|numbers?|digits|"
    r"codes?|clock|meters?|displays?|captions?|headlines?|words?|it)\b"
    r"|\bwhat('s|\s+is|\s+are)\s+(written|printed|typed|inscribed|displayed|shown as text)\b"
    r"|\bwhat (it|this|that|they) (says?|reads?)\b"
    r"|\bwritten\s+(on|in|at|inside|across|below|above|there)\b"
    r"|\bhandwrit\w*|\bwhat (\w+ ){0,2}(does|do) (the|this|that|these|it|its)\b[^?]{0,40}\b(say|read)\b"
    r"|\bkey[- ]value\b|\bkey information\b|\bextract\w*\b.{0,80}\b(from|in|on) (this|the) (receipt|invoice|"
    r"form|document|id card|card|bill|ticket|page|business card|license|passport|certificate)\b"
    r"|\bextract\w*\b.{0,60}\b(fields?|entities|information|values?)\b"
    r"|\b(convert|parse|turn|transform|render|translate|extract|output|write|return)\b.{0,60}"
    r"\b(markdown|html|latex|mathml)\b"
    r"|\b(markdown|html|latex)\b.{0,40}\b(of|for|from) (the|this) (document|page|table|formula|equation|"
    r"image|screenshot|form)\b|\bqwenvl (html|markdown)\b|\btext (recognition|spotting|detection)\b"
    r"|\b(text|words?|characters?) (in|on|of|from) (the|this) (image|picture|photo|document|page|scan|"
    r"receipt|sign|screenshot)\b(?!\W+(into|and describe))"
    r"|ocr|识别|文字|文本|写(着|的是|了)|字符|转(换)?(为|成)\s*(markdown|html|latex)|提取\S{0,10}(信息|内容|字段)|提取\S{0,6}(收据|发票|票据|证件|身份证|名片|表单|单据)",
    re.S,
)
_OCR_TOKENS = re.compile(r"\n?\s*reference ocr tokens?\s*:.*$", re.S)
_TEXT_CUE = re.compile(
    r"\b(text|lettering|inscription|letters|characters|words?|slogan)\s+(in|on|at|across|inside|printed|written|"
    r"shown|visible|displayed)\b|\bwhat (text|letters?|words?|characters?)\b|\bprinted on\b"
    r"|\b(number|word|brand) (on|of) the\b"
    r"|\b(title|author|publisher|edition) of (this|the) book\b|\bwho (wrote|is the author of) this book\b"
    r"|\bwhat (brand|number|word)\b(?!.{0,30}\b(color|colour|animal|sport)\b)",
    0,
)
# Removed before reading cues: answer-format instructions and text that is part of the prompt itself.
_NOT_IMAGE_TEXT = re.compile(
    r"\b(without|with no|no) (any )?(additional |other |extra |further |explanatory )?(text|words|"
    r"explanation|characters)\b|\bsingle (word|letter)\b|\b(one|a few|few) words?\b|\bin (text|words)\b"
    r"|\banswer (the question )?(with|using|in)\b[^.?\n]{0,60}"
    r"|\b(respond|reply|output) (only )?with\b[^.?\n]{0,60}"
    r"|\b(the |this )?(following|given|above|below|provided) (text|passage|paragraph|context|article|"
    r"story|sentence|poem|question)s?\b|\bread (the |this )?(passage|question|context|article|paragraph|"
    r"story|sentence|poem|instructions?|text below|following)\b|\bcontext\s*:.*?(?=question\s*:|$)"
    r"|\bhint\s*:.*?(?=question\s*:|$)|\btext\s*:.*$"
    r"|用\S{0,6}(文字|文本|语言|中文|英文)(回答|作答|描述|表述)|(以下|下面|上述|给定|这段)的?(文本|文字|段落|材料|短文)",
    re.S,
)
_CHOICES = re.compile(
    r"(^|\n)\s*\(?[A-Ea-e][.)]\s+\S.*\n\s*\(?[B-Fb-f][.)]\s+\S|\b(options|choices)\s*:|\boption'?s? letter\b"
    r"|\bchoose (the |one of the )?(correct |best )?(answer|option)\b|\bselect (the )?(correct |best )?"
    r"(answer|option)\b|\(a\)[^\n]{0,80}\(b\)|选项",
    0,
)
_QUESTION = re.compile(r"\?|？|\b(what|which|who|whom|whose|where|when|why|how|is|are|does|do|can|could|"
                       r"was|were|did|will|should)\b|吗|什么|哪|谁|几|多少|怎么|为什么|是否")
_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")
_MARK = re.compile(r"[\d<]|region")  # every box, point, polygon and region token has one


def count_boxes(text: str) -> int:
    """Number of boxes in `text` in any syntax of `_BOX_PATTERNS` (points and polygons not counted)."""
    return len(_BOX.findall(text)) if _DIGIT.search(text) else 0  # every box syntax has digits


def has_region(text: str) -> bool:
    """Whether `text` holds a box, point, polygon or region token."""
    if not _MARK.search(text):
        return False
    return bool(_BOX.search(text) or _POINT.search(text) or _REGION_TOKEN.search(text))


def _repeated_labels(answer: str) -> bool:
    """Whether two boxes in `answer` carry the same category label (`person [..]; person [..]`)."""
    labels = [next(g for g in match.groups() if g).strip().lower() for match in _LABEL.finditer(answer)]
    labels = [label for label in labels if label]
    return len(labels) != len(set(labels))


def _task_token(prompt: str, text: str) -> str | None:
    """A model's task prompt in `prompt` (`text` is it in lower case), as a task, else None."""
    for pattern, task in _TASK_TOKENS:
        if pattern.search(text):
            return task
    match = _PALIGEMMA.match(prompt)
    if match and len(prompt) < 200 and not prompt.rstrip().endswith("?"):
        head, rest = match.group(1).lower(), prompt[match.end():].strip()
        if head == "detect":
            is_referring = len(_WORD.findall(rest)) >= 3 and ";" not in rest and "," not in rest
            return None if is_referring and not _DETECT.search(rest.lower()) else "detection"
        if match.group(2) or head in ("ocr", "segment") or not rest:
            return {"caption": "captioning", "describe": "captioning", "ocr": "ocr", "segment": "grounding",
                    "answer": "vqa", "question": "vqa"}[head]
    return None


def classify_turn(prompt: str, answer: str = "") -> tuple[str, str]:
    """(task, rule) of one turn: `prompt` the human text (placeholder stripped), `answer` the reply."""
    prompt = prompt.strip()
    shape = _answer_shape(answer)
    if len(prompt) > CACHED_PROMPT_CHARS:
        return _classify.__wrapped__(prompt, shape)
    return _classify(prompt, shape)


def _answer_shape(answer: str) -> tuple[int, bool, bool, bool]:
    """What of the answer the rules read: (boxes, capped at 3; repeated labels; points or region
    tokens; a long free answer)."""
    boxes = count_boxes(answer)
    repeated = boxes >= 2 and _repeated_labels(answer)
    marks = not boxes and has_region(answer)
    long_answer = len(answer) >= 160 and len(_WORD.findall(answer)) >= 40
    return min(boxes, 3), repeated, marks, long_answer


# Corpora repeat prompt templates: the decision for a (prompt, answer shape) pair is cached.
CACHED_PROMPT_CHARS = 1000


@functools.lru_cache(maxsize=1 << 14)
def _classify(prompt: str, shape: tuple[int, bool, bool, bool]) -> tuple[str, str]:
    answer_boxes, repeated_labels, answer_marks, long_answer = shape
    text = prompt.lower()  # the cue patterns are lower case (faster than IGNORECASE)
    task = _task_token(prompt, text)
    if task is not None:
        return task, "task-token"
    detect_verb = _DETECT_VERB.search(text)
    detect = _DETECT.search(text)
    if detect and (answer_boxes or detect_verb or _REFER.search(text)):
        return "detection", "detect-intent"
    if (answer_boxes or _BOX_REQUEST.search(text)) and _CAPTION.search(text) and not _OCR.search(text):
        return "grounding", "grounded-caption"
    if has_region(prompt):
        return "grounding", "region-in-prompt"
    if answer_boxes:
        refer = _REFER.search(text)
        if not refer and _OCR.search(text):
            return "ocr", "ocr-with-regions"
        if repeated_labels:
            return "detection", "repeated-labels"
        if answer_boxes >= 3 and not refer:
            return "detection", "many-boxes"
        return "grounding", "box-in-answer"
    if answer_marks:
        return ("detection", "detect-intent") if detect else ("grounding", "point-in-answer")
    choices = _CHOICES.search(text)
    if detect_verb and not choices and "?" not in text:
        return "detection", "detect-intent"
    if choices:
        return "vqa", "multiple-choice"
    if _REFER.search(text):
        return "grounding", "locate-intent"
    hint_free = _OCR_TOKENS.sub("", text) if "ocr token" in text else text
    cleaned = None  # the text without passages and answer-format phrases, made only when a cue is seen
    if _OCR.search(hint_free):
        cleaned = _NOT_IMAGE_TEXT.sub(" ", hint_free)
        if _OCR.search(cleaned) and not _CAPTION_FIRST.search(cleaned):
            return "ocr", "ocr-intent"
    if _CAPTION.search(hint_free) and not _CAPTION_NOT.search(hint_free):
        return "captioning", "caption-intent"
    if len(hint_free) < len(text):
        return "ocr", "ocr-tokens"
    if _TEXT_CUE.search(hint_free):
        cleaned = _NOT_IMAGE_TEXT.sub(" ", hint_free) if cleaned is None else cleaned
        if _TEXT_CUE.search(cleaned):
            return "ocr", "text-cue"
    if _QUESTION.search(text):
        return "vqa", "question"
    if long_answer:
        return "captioning", "long-answer"
    return "vqa", "default"


# A caption request that mentions text ("describe the image, including any text") stays captioning.
_CAPTION_FIRST = re.compile(
    r"^\W*(please\s+)?(briefly\s+)?(describe|caption|summari[sz]e|provide a (\w+ )?(caption|description)|"
    r"write a (\w+ )?(caption|description)|generate a (\w+ )?(caption|description))\b"
    r"|\btranscribe (the |this )?(image|picture|photo) into\b",
    0,
)

"""The text protocol of generative critics (`lm`, `openai`): the prompt a critic model reads and
the verdict lines it writes, MathCritique-style (step, correctness, explanation):

    Step 1: correct — ok
    Step 2: incorrect — 21+2=24 is wrong: 21+2=23

The parser never trusts the model: a step whose line is missing, garbled or out of range gets
an unknown verdict (`ok=None`), counted in `Critique.extra["unknown_steps"]`.
"""

from __future__ import annotations

import re

from critics.protocol import Critique, CritiqueRequest, StepVerdict

PROMPT_TEMPLATE = "{prompt}{steps}Verdicts:\n"
"""What the critic model reads. Compact on purpose: the embedded critic is a char-level model
with a short context. Fields: `prompt` (the query prompt), `steps` ("1. step\\n2. step\\n...")
and `num_steps`. Pass `template=` to the critic for instruct models that need more words."""

UNPARSED = "unparsed"

# "Step 2: incorrect — why", tolerant of case, markdown, "-"/"–"/":" for the dash and a missing
# explanation. The `\b` keeps "correctness ..." from reading as a verdict.
_VERDICT = re.compile(
    r"^[\s*#>-]*step\s*(\d+)\s*\**\s*[:.)—–-]?\s*\**\s*(incorrect|correct)\b[\s*]*(?:[—–-]+|:)?\s*(.*)$",
    re.IGNORECASE,
)


def format_prompt(prompt: str, steps: list[str], template: str = PROMPT_TEMPLATE) -> str:
    """The critic's input: the query prompt then the steps numbered from 1, one per line."""
    numbered = "".join(f"{i}. {' '.join(step.split())}\n" for i, step in enumerate(steps, 1))
    return template.format(prompt=prompt, steps=numbered, num_steps=len(steps))


def format_verdicts(verdicts: list[StepVerdict], max_explanation: int | None = None) -> str:
    """The text a critic model should write for `verdicts` (the training target of `lm`)."""
    lines = []
    for i, v in enumerate(verdicts, 1):
        why = " ".join((v.feedback or ("ok" if v.ok else "wrong")).split())
        if max_explanation is not None and len(why) > max_explanation:
            head = why[: max_explanation + 1]  # cut at a word end when there is one
            why = head.rsplit(" ", 1)[0] if " " in head else why[:max_explanation]
        lines.append(f"Step {i}: {'correct' if v.ok else 'incorrect'} — {why}\n")
    return "".join(lines)


def parse_verdicts(text: str, num_steps: int) -> tuple[list[StepVerdict], int]:
    """One verdict per step read from the critic's text, and how many steps stayed unknown.

    Lines that do not read as a verdict are skipped; a step number outside 1..num_steps is
    ignored; when a step is judged twice the first line wins (later ones are usually the
    model repeating itself). Steps with no line get `ok=None, score=0.5, "unparsed"`.
    """
    found: dict[int, StepVerdict] = {}
    for line in text.splitlines():
        m = _VERDICT.match(line)
        if m is None:
            continue
        index = int(m[1]) - 1
        if not 0 <= index < num_steps or index in found:
            continue
        ok = m[2].lower() == "correct"
        why = m[3].strip() or m[2].lower()
        found[index] = StepVerdict(ok=ok, score=1.0 if ok else 0.0, feedback=why)
    verdicts = [found.get(i, StepVerdict(ok=None, score=0.5, feedback=UNPARSED))
                for i in range(num_steps)]
    return verdicts, num_steps - len(found)


def read_critique(request: CritiqueRequest, critic: str, text: str, tokens: int) -> Critique:
    """The critique a generative critic's `text` gives `request`, unknown steps counted."""
    verdicts, unknown = parse_verdicts(text, len(request.steps))
    return Critique(sample_id=request.sample_id, critic=critic, verdicts=verdicts, raw_text=text,
                    tokens=tokens, extra={"unknown_steps": unknown})

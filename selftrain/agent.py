"""The environment side of Search-R1 style search-agent rollouts. Model-free.

A trajectory alternates policy turns and environment observations:

    <search>Zorvan Keld</search>                          policy (stops at </search>)
    \\n<information>Doc 1(Title: "Zorvan Keld") ...</information>\\n     environment
    <answer>Lumo</answer>                                 policy (stops at </answer>): done

A turn whose action does not parse gets Search-R1's corrective observation instead, and still
counts against the turn limit. Observations are context, not policy output: `Trajectory`
records their character spans so SFT masks them from the loss.

The same module reads completions back (`split_turns`, `extract_answer`, ...), so everything
in samples.parquet can be re-derived from the completion text alone, and scores answers as
Search-R1's reward does (`verl/utils/reward_score/qa_em.py`): the last <answer> of a response,
SQuAD-normalised, exact match (`em`) or substring match (`subem`) against any gold answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from selftrain.retrieval import Doc, Retriever

STOP = ("</search>", "</answer>")
"""Stop strings of the policy: a turn ends with its action."""
OPEN_TAGS = ("<search>", "<answer>")
OBS_OPEN = "\n<information>"
OBS_CLOSE = "</information>\n"
INVALID_OBSERVATION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between "
    "<search> and </search>. If I want to give the final answer, I should put the answer "
    "between <answer> and </answer>. Let me try again.\n"
)
"""Search-R1's corrective message (`execute_predictions`), verbatim."""

ActionKind = Literal["search", "answer", "invalid"]
Match = Literal["em", "subem"]
"""How an answer is compared with the gold answers: Search-R1's `em_check` or `subem_check`."""
MATCHES: tuple[Match, ...] = ("em", "subem")


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    content: str = ""
    """The search query or the answer, stripped; "" for an invalid action."""


def truncate_at_stop(text: str) -> str:
    """`text` cut just after its first stop string (backends do this; a turn must end there)."""
    ends = [text.find(s) + len(s) for s in STOP if s in text]
    return text[: min(ends)] if ends else text


def parse_action(text: str) -> Action:
    """The action of one policy turn.

    The turn is read up to its first closing tag; before it there must be exactly one opening
    tag, of the same kind, around a non-empty content. So `<search>q</search>` is a search,
    text after the first action is ignored (`<search>q</search><answer>a</answer>` searches),
    and a missing closing tag, a nested or mismatched tag, or an empty query is invalid.
    Search-R1 accepts the first `<(search|answer)>(.*?)</\\1>` anywhere; being stricter keeps
    the format the policy learns unambiguous.
    """
    ends = [(text.find(s), s) for s in STOP if s in text]
    if not ends:
        return Action("invalid")
    close_at, close = min(ends)
    head = text[:close_at]
    kind = close[2:-1]
    opens = sum(head.count(tag) for tag in OPEN_TAGS)
    start = head.rfind(f"<{kind}>")
    if opens != 1 or start < 0:
        return Action("invalid")
    content = head[start + len(kind) + 2 :].strip()
    return Action(kind, content) if content else Action("invalid")  # type: ignore[arg-type]


# ---------------------------------------------------------------- observations


def format_docs(docs: Sequence[Doc]) -> str:
    """Search-R1's `_passages2string`: one 'Doc 1(Title: "T") text' line per document.

    Search-R1 prints the first line of a document's `contents` as the title, verbatim; in its
    wiki-18 corpus (and in what `serve-retriever` sends) that line is the title in double
    quotes, so the title is written in quotes here, whatever retriever the document came from.
    """
    return "\n".join(f'Doc {i}(Title: "{d.title}") {d.text}'
                     for i, d in enumerate(docs, 1)).strip()


def search_observation(docs: Sequence[Doc]) -> str:
    """The observation after a search. Search-R1 pads with blank lines; one newline each side
    keeps trajectories short for small-context models."""
    return f"{OBS_OPEN}{format_docs(docs)}{OBS_CLOSE}"


_TITLE = re.compile(r'(?:^|<information>)Doc \d+\(Title: "(.*?)"\) ', re.M)


def observation_titles(observation: str) -> list[str]:
    """The titles of the documents shown in a search observation, in rank order."""
    return _TITLE.findall(observation)


# ---------------------------------------------------------------- trajectories


@dataclass
class Turn:
    kind: ActionKind
    content: str
    """Search query or answer ("" when invalid)."""
    text: str
    """What the policy wrote this turn (ends with its stop string when it hit one)."""
    observation: str = ""
    """What the environment appended: an <information> block, the corrective message, or ""."""
    doc_ids: list[str] = field(default_factory=list)
    """Ids of the documents a search returned, in rank order."""
    num_tokens: int = 0
    """Policy tokens generated for `text` (0 for replayed turns)."""
    replayed: bool = False
    """True when the turn came from `replay` rather than from the policy in this run."""


@dataclass
class Trajectory:
    """One episode. Derived fields are properties of `turns`, so they can never disagree."""

    prompt: str
    turns: list[Turn] = field(default_factory=list)
    stop_reason: str | None = None
    """None while running; then "answer", "max_turns", or "context" (generate_fn gave up)."""

    @property
    def completion(self) -> str:
        """Everything after the prompt: policy turns with their observations."""
        return "".join(t.text + t.observation for t in self.turns)

    @property
    def context(self) -> str:
        """What the policy continues from."""
        return self.prompt + self.completion

    @property
    def steps(self) -> list[str]:
        """One step per turn: the policy's text with its observation (= `split_steps`)."""
        return [t.text + t.observation for t in self.turns]

    @property
    def masked_spans(self) -> list[tuple[int, int]]:
        """[start, end) character spans of `completion` written by the environment."""
        spans, pos = [], 0
        for t in self.turns:
            pos += len(t.text)
            if t.observation:
                spans.append((pos, pos + len(t.observation)))
                pos += len(t.observation)
        return spans

    @property
    def answer(self) -> str | None:
        return next((t.content for t in self.turns if t.kind == "answer"), None)

    @property
    def num_tokens(self) -> int:
        return sum(t.num_tokens for t in self.turns)

    @property
    def num_invalid(self) -> int:
        return sum(t.kind == "invalid" for t in self.turns)

    @property
    def num_searches(self) -> int:
        return sum(t.kind == "search" for t in self.turns)

    @property
    def done(self) -> bool:
        return self.stop_reason is not None


@dataclass
class AgentEnv:
    """What a rollout worker needs from a search task (`task.env()`)."""

    retriever: Retriever
    max_turns: int
    topk: int


GenerateFn = Callable[[list[str]], Sequence[tuple[str, int] | None]]
"""contexts -> one (text, num_tokens) per context: one policy turn each, stopped at `STOP`.
None for a context means "cannot continue" (e.g. the context window is full): episode ends."""


def _act(traj: Trajectory, text: str, num_tokens: int, replayed: bool = False) -> Turn:
    """Append the turn for `text`; a search's observation is filled in by `_observe`."""
    action = parse_action(text)
    turn = Turn(kind=action.kind, content=action.content, text=text, num_tokens=num_tokens,
                replayed=replayed)
    if action.kind == "invalid":
        turn.observation = INVALID_OBSERVATION
    elif action.kind == "answer":
        traj.stop_reason = "answer"
    traj.turns.append(turn)
    return turn


def _observe(searching: list[Turn], retriever: Retriever, topk: int) -> None:
    """One batched retriever call for every search issued this round of turns."""
    if not searching:
        return
    results = retriever.search([t.content for t in searching], topk)
    if len(results) != len(searching):
        raise RuntimeError(f"retriever returned {len(results)} result lists for "
                           f"{len(searching)} queries")
    for turn, docs in zip(searching, results):
        turn.observation = search_observation(docs)
        turn.doc_ids = [d.id for d in docs]


def run_episodes(prompts: Sequence[str], generate_fn: GenerateFn, retriever: Retriever,
                 max_turns: int, topk: int,
                 starts: Sequence[Trajectory] | None = None) -> list[Trajectory]:
    """Run one episode per prompt, all live episodes advancing together.

    Each round calls `generate_fn` once with the contexts of every live episode and the
    retriever once with every search issued, so a batched backend and a remote retriever see
    few, large calls. An episode ends at its first answer, after `max_turns` turns (invalid
    turns included), or when `generate_fn` returns None for it. `starts` (from `replay`)
    continues partial episodes instead; their turns count against `max_turns`.
    """
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    if starts is None:
        trajs = [Trajectory(prompt=p) for p in prompts]
    else:
        if len(starts) != len(prompts):
            raise ValueError(f"{len(starts)} starts for {len(prompts)} prompts")
        for p, s in zip(prompts, starts):
            if s.prompt != p:
                raise ValueError(f"start trajectory has prompt {s.prompt!r}, expected {p!r}")
        trajs = [Trajectory(prompt=s.prompt, turns=list(s.turns), stop_reason=s.stop_reason)
                 for s in starts]
    for t in trajs:
        if not t.done and len(t.turns) >= max_turns:
            t.stop_reason = "max_turns"
    while live := [t for t in trajs if not t.done]:
        outs = generate_fn([t.context for t in live])
        if len(outs) != len(live):
            raise RuntimeError(f"generate_fn returned {len(outs)} turns for {len(live)} contexts")
        searching = []
        for traj, out in zip(live, outs):
            if out is None:
                traj.stop_reason = "context"
                continue
            turn = _act(traj, truncate_at_stop(out[0]), int(out[1]))
            if turn.kind == "search":
                searching.append(turn)
            if not traj.done and len(traj.turns) >= max_turns:
                traj.stop_reason = "max_turns"
        _observe(searching, retriever, topk)
    return trajs


def replay(prompts: Sequence[str], prefix_turns: Sequence[Sequence[str]], retriever: Retriever,
           topk: int) -> list[Trajectory]:
    """Rebuild partial episodes from the policy texts of their first turns.

    For a refinement that restarts from the last good turn: each item of `prefix_turns` is a
    turn's policy text or a whole step (its observation is dropped and recomputed). Searches
    are re-run, in one batched call per turn position, so with a deterministic retriever the
    replayed observations are exactly the original ones. Pass the result as `starts` to
    `run_episodes`.
    """
    if len(prompts) != len(prefix_turns):
        raise ValueError(f"{len(prefix_turns)} prefixes for {len(prompts)} prompts")
    trajs = [Trajectory(prompt=p) for p in prompts]
    texts = [[_policy_text(step) for step in steps] for steps in prefix_turns]
    for pos in range(max((len(t) for t in texts), default=0)):
        searching = []
        for traj, steps in zip(trajs, texts):
            if pos >= len(steps):
                continue
            if traj.done:
                raise ValueError(f"replay: turn {pos + 1} comes after the answer in "
                                 f"{steps[: pos + 1]!r}")
            turn = _act(traj, steps[pos], 0, replayed=True)
            if turn.kind == "search":
                searching.append(turn)
        _observe(searching, retriever, topk)
    return trajs


def _policy_text(step: str) -> str:
    turns = split_turns(step)
    return turns[0][0] if turns else ""


# ---------------------------------------------------------------- reading completions


def _observation_at(completion: str, pos: int) -> str:
    if completion.startswith(INVALID_OBSERVATION, pos):
        return INVALID_OBSERVATION
    if completion.startswith(OBS_OPEN, pos):
        close = completion.find(OBS_CLOSE, pos + len(OBS_OPEN))
        return completion[pos:] if close < 0 else completion[pos : close + len(OBS_CLOSE)]
    return ""


def split_turns(completion: str) -> list[tuple[str, str]]:
    """(policy text, observation) per turn, re-read from a completion `run_episodes` wrote.

    A turn's text ends at its first stop string, or where the corrective message starts (an
    invalid turn without a stop string); the observation is whatever environment block starts
    there. Text the policy wrote itself (a hallucinated <information>) stays policy text.
    """
    turns, pos, n = [], 0, len(completion)
    while pos < n:
        stops = [(at, s) for s in STOP if (at := completion.find(s, pos)) >= 0]
        stop_at, stop = min(stops) if stops else (-1, "")
        invalid_at = completion.find(INVALID_OBSERVATION, pos)
        if invalid_at >= 0 and (stop_at < 0 or invalid_at <= stop_at):
            end = invalid_at
        elif stop_at >= 0:
            end = stop_at + len(stop)
        else:
            end = n
        observation = _observation_at(completion, end)
        turns.append((completion[pos:end], observation))
        pos = end + len(observation)
    return turns


def split_steps(completion: str) -> list[str]:
    """One step per turn: the policy's text with its observation."""
    return [text + obs for text, obs in split_turns(completion)]


def completion_actions(completion: str) -> list[Action]:
    """The parsed action of every turn of a completion."""
    return [parse_action(text) for text, _ in split_turns(completion)]


_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str | None:
    """The stripped content of the last <answer>...</answer> of a completion, else None.

    Search-R1's `extract_solution` (the last match of this pattern), on the completion alone.
    Search-R1 runs it on prompt + response, and its prompt holds two matches ("inside <answer>
    and </answer>", "<answer> Beijing </answer>"), so a response without an answer is scored
    as answering "Beijing" there; here it has no answer and is never correct. Rollouts still
    end at the first </answer>, so a selftrain episode has one answer; the rule decides for
    completions scored from elsewhere.
    """
    found = _ANSWER.findall(completion)
    return found[-1].strip() if found else None


def solution_key(steps: Sequence[str]) -> str:
    """The normalised search queries, in order, then the normalised answer; invalid turns are
    left out, so two trajectories differing only in a format slip count as one path."""
    parts = []
    for step in steps:
        text = _policy_text(step)
        action = parse_action(text)
        if action.kind != "invalid":
            parts.append(f"{action.kind}:{normalize_squad(action.content)}")
    return " | ".join(parts)


# ---------------------------------------------------------------- answers (SQuAD v1.1)


def normalize_squad(s: str) -> str:
    """SQuAD v1.1's answer normalisation, verbatim (Search-R1's `qa_em` uses it): lower-case, drop
    ASCII punctuation, drop the words a/an/the, collapse whitespace. Non-ASCII punctuation
    (unicode dashes, curly quotes) is kept, as in the original script."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def exact_match(prediction: str | None, golds: str | Sequence[str]) -> bool:
    """Whether the normalised prediction equals any normalised gold answer (`em_check`)."""
    return answer_matches(prediction, golds, "em")


def answer_matches(prediction: str | None, golds: str | Sequence[str], match: Match) -> bool:
    """Search-R1's `em_check` ("em": the normalised prediction equals a normalised gold answer)
    or `subem_check` ("subem": a normalised gold answer is a substring of it). No answer never
    matches."""
    if prediction is None:
        return False
    if isinstance(golds, str):
        golds = [golds]
    pred = normalize_squad(prediction)
    if match == "em":
        return any(pred == normalize_squad(g) for g in golds)
    if match == "subem":
        return any(normalize_squad(g) in pred for g in golds)
    raise ValueError(f"answer match must be one of {', '.join(MATCHES)}, got {match!r}")

"""Test critics that fail at run time, each in one way a user's critic can."""

from __future__ import annotations

from critics import Critique, StepVerdict


def _ok(requests, name):
    return [Critique(sample_id=r.sample_id, critic=name,
                     verdicts=[StepVerdict(ok=True, score=1.0) for _ in r.steps])
            for r in requests]


class Raises:
    """Its `critique` raises, as a critic with a bug does."""

    name = "raises"

    def __init__(self, task=None, message: str = "the critic model is not loaded") -> None:
        self.message = message

    def critique(self, requests):
        raise ValueError(self.message)


class TooFew:
    """Returns one critique fewer than it was asked for."""

    name = "too-few"

    def __init__(self, task=None) -> None:
        pass

    def critique(self, requests):
        return _ok(requests, self.name)[:-1]


class WrongVerdicts:
    """Returns one verdict too many for every sample."""

    name = "wrong-verdicts"

    def __init__(self, task=None) -> None:
        pass

    def critique(self, requests):
        out = _ok(requests, self.name)
        for c in out:
            c.verdicts.append(StepVerdict(ok=True, score=1.0))
        return out


class Reversed:
    """Right critiques, returned in the reverse order of the requests."""

    name = "reversed"

    def __init__(self, task=None) -> None:
        pass

    def critique(self, requests):
        return _ok(requests, self.name)[::-1]


class WrongId:
    """One critique carries a sample_id nobody asked for (a typo in the critic)."""

    name = "wrong-id"

    def __init__(self, task=None) -> None:
        pass

    def critique(self, requests):
        out = _ok(requests, self.name)
        out[-1].sample_id += "-typo"
        return out


class Repeats:
    """Critiques the first sample twice and the last not at all."""

    name = "repeats"

    def __init__(self, task=None) -> None:
        pass

    def critique(self, requests):
        out = _ok(requests, self.name)
        return [out[0], *out[:-1]]

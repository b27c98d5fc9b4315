"""Provider types, and the care types derived from them as the combinations a client saw.

A study's providers each have a *provider type* (the contract's ``therapist`` or ``coach``; a
study may declare its own, ``provider_types = ["therapist", "coach", "psychiatrist"]`` at the top
of its ``study.toml``). A client's *care type* is the set of provider types among the providers
they had sessions with: a single type's name (``"therapist"``), or for several the names joined
by ``_and_`` in declared order (``"therapist_and_psychiatrist"``). Under the contract's two types
the combination keeps the study's own name, ``"both"``. The care types of an analysis are the
combinations present in the data: single types first, in declared order, then pairs, triples, …
(``therapist``, ``coach``, ``both`` under the contract's types), and its provider types those some
provider has. A declared type that no provider has renames nothing: the care types keep the
names the declaration gives (``therapist_and_coach``, not ``both``), and the loader notes the type
(:meth:`CareTypes.without_providers`). A study of one type (``provider_types = ["therapist"]``,
or a study under the contract whose clients all see therapists) has one care type, its
reference, and so no care-type contrasts and no provider-type shifts.

Care-type contrasts are differences from a *reference* care type: a declared ``care_reference``
(which some client must have), else the contract's ``coach`` (the largest group of the shipped
study) where some client is in coach-only care, else the care type with the most clients (the
first in order among equals), so that every contrast is against the best estimated group and
never against an empty one.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CARE_CONTRASTS",
    "CARE_REFERENCE",
    "CARE_TYPES",
    "PROVIDER_TYPES",
    "CareTypes",
    "care_words",
    "contrast",
    "parse_care",
    "parse_care_reference",
    "parse_provider_types",
    "split_contrast",
]

#: The contract's provider types.
PROVIDER_TYPES: tuple[str, ...] = ("therapist", "coach")
#: The contract's care types: each provider type alone, and both.
CARE_TYPES: tuple[str, ...] = ("therapist", "coach", "both")
#: The contract's reference care type (the shipped study's largest group).
CARE_REFERENCE = "coach"
#: How the names of several provider types join into a care type's name.
JOIN = "_and_"


def contrast(care: str, reference: str) -> str:
    """A care-type contrast's label: ``"therapist-coach"`` (care type minus the reference)."""
    return f"{care}-{reference}"


def split_contrast(label: str) -> tuple[str, str]:
    """``"therapist_and_psychiatrist-coach"`` → ``("therapist_and_psychiatrist", "coach")``
    (a care type's name never holds ``-``)."""
    care, _, reference = label.rpartition("-")
    return care, reference


def care_words(care: str) -> str:
    """A care type in words: ``"therapist_and_psychiatrist"`` → ``"therapist and psychiatrist"``."""
    return care.replace(JOIN, " and ")


#: The contract's care-type contrasts: therapist-coach, both-coach.
CARE_CONTRASTS: tuple[str, ...] = tuple(
    contrast(c, CARE_REFERENCE) for c in CARE_TYPES if c != CARE_REFERENCE
)
#: Names a provider type may not take: the contract's combination, and the report's columns.
_RESERVED = frozenset({"both", "all", "pooled"})
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_USAGE = (
    'provider_types: a list of one or more names in lower case (letters, digits, "_"), '
    'e.g. ["therapist", "coach", "psychiatrist"], or ["therapist"] for a study of one type'
)


@dataclass(frozen=True)
class CareTypes:
    """A study's provider types and how care types are named and ordered from them.

    Attributes
    ----------
    provider_types : tuple of str
        The provider types, in the declared order (the contract's therapist, coach by default).
    reference : str or None
        The declared reference care type, if any (``care_reference`` in ``study.toml``).
    """

    provider_types: tuple[str, ...] = PROVIDER_TYPES
    reference: str | None = None

    @property
    def declared(self) -> bool:
        """Whether the types differ from the contract's (care types then follow the data)."""
        return self.provider_types != PROVIDER_TYPES

    def name(self, seen: Iterable[str]) -> str:
        """The care type of a client who saw providers of the types ``seen``."""
        kinds = [t for t in self.provider_types if t in set(seen)]
        if len(kinds) > 1 and not self.declared:
            return "both"
        return JOIN.join(kinds)

    def possible(self) -> tuple[str, ...]:
        """Every care type the provider types allow, in the order of :meth:`levels`."""
        if not self.declared:
            return CARE_TYPES
        n = len(self.provider_types)
        return tuple(
            self.name(combo)
            for size in range(1, n + 1)
            for combo in itertools.combinations(self.provider_types, size)
        )

    def levels(self, present: Iterable[str]) -> tuple[str, ...]:
        """The care types of a study whose clients have the care types ``present``: those
        present, in the order of :meth:`possible` (therapist, coach, both under the contract's
        types). A care type no client has is no level of the analysis: its contrasts and slopes
        would be the prior alone, reported as if estimated.
        """
        seen = set(present)
        return tuple(c for c in self.possible() if c in seen)

    def present(self, seen: Iterable[str]) -> tuple[str, ...]:
        """The provider types some provider of the study has (``seen``), in declared order."""
        kinds = set(seen)
        return tuple(t for t in self.provider_types if t in kinds)

    def without_providers(self, seen: Iterable[str]) -> tuple[str, ...]:
        """The declared provider types no provider of the study has (``seen``: the providers'
        types), in declared order; empty under the contract's types.

        Such a type changes no name: the care types of declared types are named from the
        declaration (``therapist_and_coach``, never the contract's ``both``), so that the names a
        spec or hypothesis uses do not depend on which types the data hold, and the reference
        follows the declared rule (``care_reference``, else the care type with the most clients).
        The loader records each as a note (:class:`~alliance_bayes.data.load.Conversion`), so that
        the report says why the names and reference are not the contract's.
        """
        if not self.declared:
            return ()
        kinds = set(seen)
        return tuple(t for t in self.provider_types if t not in kinds)

    def choose_reference(self, counts: Mapping[str, int]) -> str:
        """The reference care type among those with clients (``counts``, in level order)."""
        if self.reference is not None:
            return self.reference
        if not self.declared and counts.get(CARE_REFERENCE, 0):
            return CARE_REFERENCE
        # contrasts against an empty group would trade off with the intercept
        return max(counts, key=lambda c: counts[c])  # the first among equals


def parse_provider_types(raw: object) -> tuple[tuple[str, ...] | None, list[str]]:
    """A declared ``provider_types = [...]`` as a tuple, or the problems with it.

    Returns
    -------
    tuple
        ``(types, [])``, or ``(None, problems)``: each problem a sentence naming
        ``provider_types``, what it must be and what was given.
    """
    if not isinstance(raw, list) or not raw or not all(isinstance(t, str) for t in raw):
        return None, [f"{_USAGE}, got {raw!r}"]
    wrong = [
        *(f"{t!r} is not a lower-case name" for t in raw if not _NAME.match(t)),
        *(f"{t!r} is reserved" for t in raw if t in _RESERVED),
        *(
            f"{t!r} contains {JOIN!r} or begins or ends with 'and', which would make the care "
            "types' names ambiguous"
            for t in raw
            if JOIN in f"_{t}_"
        ),
        *(f"{t!r} is listed twice" for t in sorted(set(raw)) if raw.count(t) > 1),
    ]
    if wrong:
        return None, [f"{_USAGE}, got {raw!r} ({'; '.join(wrong)})"]
    return tuple(raw), []


def parse_care_reference(raw: object, care: CareTypes) -> tuple[str | None, list[str]]:
    """A declared ``care_reference = "..."`` checked against the care types ``care`` allows."""
    allowed = care.possible()
    if not isinstance(raw, str) or raw not in allowed:
        return None, [
            f"care_reference: one of the care types {', '.join(allowed)} "
            f"(the provider types a client saw, joined by {JOIN!r}), got {raw!r}"
        ]
    return raw, []


def parse_care(types: object, reference: object) -> tuple[CareTypes, list[str]]:
    """A study's declared ``provider_types`` and ``care_reference`` (each None when not declared)
    as :class:`CareTypes`, or the contract's with the problems found."""
    problems: list[str] = []
    care = CareTypes()
    if types is not None:
        parsed, problems = parse_provider_types(types)
        care = CareTypes(parsed) if parsed else care
    if reference is not None and not problems:
        chosen, wrong = parse_care_reference(reference, care)
        problems += wrong
        care = CareTypes(care.provider_types, chosen)
    return care, problems

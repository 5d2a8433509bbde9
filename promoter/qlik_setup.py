"""The source site's QMC set up for qs-promoter: its custom properties and the reload tag.

The original asked an admin to create these by hand (seed-README, step 8). ``plan_setup()``
compares what the settings ask for with what the source site holds and returns the steps that
close the gap, each with the problems it fixes in an admin's words; ``qs-promoter qlik setup``
carries them out and ``doctor`` reports them. What is wanted:

- always, on apps: PromotionApproval (Approve, Deny), PromoteToServer (``alias - Overwrite`` and
  ``alias - Duplicate`` per target site) and PromoteToStream (the target sites' stream names);
- on apps, when the settings use them: PromotionS3Versioning (versioning.enabled),
  PromotionUnpublish (unpublish.auto is false), PromoteOnReload and the reload tag
  (promote_on_reload.enabled);
- EmailAlertOnPublishTo on streams when email.enabled;
- when authorization.enabled: CanPromote on users, CanPromoteFrom on streams, and CanPromoteGroup
  on streams and users, whose values (the organisation's groups) are the admin's to add.

Choices are only ever added, except on PromoteToServer and PromoteToStream, which follow the
settings and the target sites: a choice there that names no configured site or stream is removed,
unless some app still has it set (it is kept and reported). Names are the settings' names,
exactly: the rest of qs-promoter compares them exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from promoter.approval import Mode
from promoter.errors import PromoterError, QrsConflict
from promoter.qrs.client import QrsClient
from promoter.qrs.models import CustomPropertyDefinition
from promoter.settings import Settings

APP, STREAM, USER = "App", "Stream", "User"
TRUE = "True"
APPROVE, DENY = "Approve", "Deny"
TEXT = "Text"
# A definition changed in the QMC while setup ran is read and planned again, this many times in all.
ROUNDS = 3
_SHOWN = 6  # choices named in one sentence, at most; the rest are counted


def server_choices(aliases: Iterable[str]) -> tuple[str, ...]:
    """PromoteToServer's choices: ``alias - Overwrite`` and ``alias - Duplicate`` per target site."""
    return tuple(
        f"{alias} - {mode.value.title()}" for alias in aliases for mode in (Mode.OVERWRITE, Mode.DUPLICATE)
    )


@dataclass(frozen=True, slots=True)
class WantedProperty:
    """A custom property definition qs-promoter reads, as the settings want it."""

    name: str
    object_types: tuple[str, ...]
    choices: tuple[str, ...]
    purpose: str  # the description a new definition gets in the QMC
    # True: the choices are exactly what the settings say; another choice is removed when unused.
    follows_settings: bool = False
    stale: str = ""  # why another choice is wrong, when follows_settings
    admins_choices: bool = False  # the organisation's own values (groups), added in the QMC
    caveat: str = ""  # why choices cannot follow the settings this time (a target site unread)


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the source site holds: every definition, the values in use, the tag names."""

    definitions: tuple[CustomPropertyDefinition, ...]
    # definition id -> values set on its apps/streams/users (case-folded); None: could not tell
    in_use: Mapping[UUID, frozenset[str] | None]
    tags: frozenset[str]


class StepKind(StrEnum):
    CREATE = "create"
    CHANGE = "change"
    CREATE_TAG = "create tag"


@dataclass(frozen=True, slots=True)
class Step:
    """One change to the source site, and the problems it fixes (what doctor reports)."""

    kind: StepKind
    name: str
    problems: tuple[str, ...]
    definition: CustomPropertyDefinition | None = None  # as it should be stored (CREATE, CHANGE)
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    added_types: tuple[str, ...] = ()
    renamed_from: str | None = None

    def summary(self) -> str:
        """The change in a few words, for the "would ..." and "done: ..." lines."""
        if self.kind is StepKind.CREATE_TAG:
            return f"create the tag {self.name}"
        assert self.definition is not None
        if self.kind is StepKind.CREATE:
            types = " and ".join(self.definition.object_types or [])
            choices = f"the choices {quoted(self.added)}" if self.added else "no choices yet"
            return f"create the custom property {self.name} on {types} with {choices}"
        parts = [f"rename it from {self.renamed_from!r}"] if self.renamed_from else []
        if self.added_types:
            parts.append(f"allow it on {' and '.join(self.added_types)}")
        if self.added:
            parts.append(f"add the choices {quoted(self.added)}")
        if self.removed:
            parts.append(f"remove the unused choices {quoted(self.removed)}")
        return f"change the custom property {self.name}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Note:
    """Something setup leaves as it is, and what the admin can do about it."""

    text: str
    hint: str


@dataclass(frozen=True, slots=True)
class SetupPlan:
    steps: tuple[Step, ...]
    notes: tuple[Note, ...] = ()  # mismatches setup must not fix (a stale choice still in use)
    in_order: tuple[str, ...] = ()  # definitions and tags already as wanted
    advice: tuple[str, ...] = ()  # what only the admin can add (CanPromoteGroup's groups)

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(problem for step in self.steps for problem in step.problems)


def quoted(values: Sequence[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """Values without case-insensitive repeats (QRS compares stream names without case), first kept."""
    seen: dict[str, str] = {}
    for value in values:
        if value.strip():
            seen.setdefault(value.casefold(), value)
    return tuple(seen.values())


def wanted_properties(
    settings: Settings, target_streams: Mapping[str, Sequence[str] | None]
) -> tuple[WantedProperty, ...]:
    """The definitions the settings need; ``target_streams`` maps each target site to its stream
    names, or to None when they could not be read (then no stream choice is removed)."""
    names = settings.properties
    aliases = ", ".join(settings.target_sites) or "none configured"
    unread = ", ".join(site for site, streams in target_streams.items() if streams is None)
    streams = _unique(s for found in target_streams.values() for s in found or ())
    wanted = [
        WantedProperty(
            names.promotion_approval, (APP,), (APPROVE, DENY), "approve or deny promoting this app"
        ),
        WantedProperty(
            names.promote_to_server,
            (APP,),
            server_choices(settings.target_sites),
            "the target sites, and whether to overwrite or duplicate the app there",
            follows_settings=True,
            stale=f"is not 'alias - Overwrite' or 'alias - Duplicate' of a target site ({aliases})",
        ),
        WantedProperty(
            names.promote_to_stream,
            (APP,),
            streams,
            "the streams on the target sites to publish the app to",
            follows_settings=not unread,
            stale="is not a stream on any target site",
            caveat=f"the streams of {unread} could not be read, so no stream choice is removed"
            if unread
            else "",
        ),
    ]
    optional = [
        (settings.versioning.enabled, names.promotion_s3_versioning, APP, "keep a version of this app in S3"),
        (not settings.unpublish.auto, names.promotion_unpublish, APP, "unpublish this app once decided"),
        (
            settings.promote_on_reload.enabled,
            names.promote_on_reload,
            APP,
            "promote this app on every reload",
        ),
        (settings.email.enabled, names.email_alert_on_publish_to, STREAM, "alert approvers on publish here"),
        (settings.authorization.enabled, names.can_promote, USER, "this user may approve and promote apps"),
        (settings.authorization.enabled, names.can_promote_from, STREAM, "non-owners may promote from here"),
    ]
    wanted += [WantedProperty(name, (on,), (TRUE,), why) for used, name, on, why in optional if used]
    if settings.authorization.enabled:
        group = "promoting from a stream needs a group of the stream"
        wanted.append(WantedProperty(names.can_promote_group, (STREAM, USER), (), group, admins_choices=True))
    return tuple(wanted)


def wanted_tags(settings: Settings) -> tuple[str, ...]:
    return (settings.properties.reload_tag,) if settings.promote_on_reload.enabled else ()


def plan_setup(wanted: Sequence[WantedProperty], tags: Sequence[str], state: SourceState) -> SetupPlan:
    """The steps that make the source site hold what is ``wanted``; pure, with reasons."""
    by_name = {d.name.casefold(): d for d in state.definitions}
    steps: list[Step] = []
    notes: list[Note] = []
    in_order: list[str] = []
    advice: list[str] = []
    for want in wanted:
        existing = by_name.get(want.name.casefold())
        if want.caveat:
            notes.append(
                Note(
                    f"{want.name}: {want.caveat}",
                    "make every target site answer (see doctor), then run `qs-promoter qlik setup` again",
                )
            )
        if existing is None:
            steps.append(_create(want))
            choices: Sequence[str] = want.choices
        else:
            step, kept = _change(want, existing, state.in_use.get(existing.id))
            notes += kept
            if step is None:
                in_order.append(want.name)
            else:
                steps.append(step)
            choices = (step.definition if step and step.definition else existing).choice_values or []
        if want.admins_choices and not choices:
            advice.append(
                f"add your groups (e.g. Sales_Admin) as choices of {want.name} in the QMC; "
                "until then only an app's owner can promote it"
            )
    for tag in tags:
        if tag in state.tags:
            in_order.append(f"tag {tag}")
        else:
            steps.append(Step(StepKind.CREATE_TAG, tag, (f"the tag {tag} is missing",)))
    return SetupPlan(tuple(steps), tuple(notes), tuple(in_order), tuple(advice))


def _create(want: WantedProperty) -> Step:
    definition = CustomPropertyDefinition(
        name=want.name,
        value_type=TEXT,
        choice_values=list(want.choices),
        object_types=list(want.object_types),
        description=f"qs-promoter: {want.purpose}",
    )
    on = " and ".join(want.object_types)
    return Step(StepKind.CREATE, want.name, (f"{want.name} is missing (on {on})",), definition, want.choices)


def _change(
    want: WantedProperty, existing: CustomPropertyDefinition, in_use: frozenset[str] | None
) -> tuple[Step | None, list[Note]]:
    """The change that makes ``existing`` what is wanted (None: nothing to change), and what is kept."""
    problems: list[str] = []
    notes: list[Note] = []
    if existing.name != want.name:
        problems.append(
            f"{want.name} is named {existing.name!r} in the QMC (qs-promoter compares names exactly)"
        )
    types = list(existing.object_types or [])
    missing_types = [t for t in want.object_types if t.casefold() not in {x.casefold() for x in types}]
    if missing_types:
        on = ", ".join(types) or "nothing"
        problems.append(f"{want.name} cannot be set on {' or '.join(missing_types)} (only on {on})")
    current = list(existing.choice_values or [])
    have = {c.casefold() for c in current}
    added = tuple(c for c in want.choices if c.casefold() not in have)
    if added:
        problems.append(f"{want.name} lacks the choice{'s' if len(added) > 1 else ''} {quoted(added)}")
    removed: list[str] = []
    if want.follows_settings:
        wanted = {c.casefold() for c in want.choices}
        for choice in (c for c in current if c.casefold() not in wanted):
            if in_use is not None and choice.casefold() not in in_use:
                removed.append(choice)
                problems.append(f"{want.name} choice {choice!r} {want.stale}")
            else:
                used = (
                    "is still in use" if in_use is not None else "may be in use where it cannot be searched"
                )
                notes.append(
                    Note(
                        f"{want.name} choice {choice!r} {want.stale}, but it {used}: kept",
                        f"clear it where it is set ({', '.join(types)}) in the QMC, "
                        "then run `qs-promoter qlik setup`",
                    )
                )
    if not problems:
        return None, notes
    definition = existing.model_copy(
        update={
            "name": want.name,
            "object_types": types + missing_types,
            "choice_values": [c for c in current if c not in removed] + list(added),
        }
    )
    renamed = existing.name if existing.name != want.name else None
    step = Step(
        StepKind.CHANGE,
        want.name,
        tuple(problems),
        definition,
        added,
        tuple(removed),
        tuple(missing_types),
        renamed,
    )
    return step, notes


# -- reading and changing the sites ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Survey:
    """What was read for one plan: the plan itself, and which target sites could not be read, why."""

    plan: SetupPlan
    unread: Mapping[str, str] = field(default_factory=dict)


async def target_streams(settings: Settings) -> tuple[dict[str, Sequence[str] | None], dict[str, str]]:
    """Each target site's stream names (None when the site could not be read), and why not."""

    async def read(alias: str) -> Sequence[str] | str:
        try:
            async with QrsClient.for_site(settings, alias) as qrs:
                return [stream.name for stream in await qrs.streams()]
        except PromoterError as exc:  # no answer, refused, or its certificates cannot be read
            return str(exc)

    found = await asyncio.gather(*(read(alias) for alias in settings.target_sites))
    streams = {
        alias: None if isinstance(r, str) else r
        for alias, r in zip(settings.target_sites, found, strict=True)
    }
    unread = {alias: r for alias, r in zip(settings.target_sites, found, strict=True) if isinstance(r, str)}
    return streams, unread


async def source_state(qrs: QrsClient, wanted: Sequence[WantedProperty], tags: Sequence[str]) -> SourceState:
    """The source site's definitions, which wanted tags exist, and the values in use of the
    definitions whose choices follow the settings (only those may lose a choice)."""
    definitions = tuple(await qrs.custom_property_definitions())
    following = {w.name.casefold() for w in wanted if w.follows_settings}
    in_use = {
        d.id: await qrs.custom_property_values_in_use(d)
        for d in definitions
        if d.name.casefold() in following
    }
    present = frozenset([tag for tag in tags if await qrs.tag_by_name(tag) is not None])
    return SourceState(definitions, in_use, present)


async def survey(settings: Settings, source: QrsClient) -> Survey:
    """Read the target sites' streams and the source site, and plan (nothing is changed)."""
    streams, unread = await target_streams(settings)
    wanted, tags = wanted_properties(settings, streams), wanted_tags(settings)
    return Survey(plan_setup(wanted, tags, await source_state(source, wanted, tags)), unread)


async def apply_step(qrs: QrsClient, step: Step) -> None:
    if step.kind is StepKind.CREATE_TAG:
        await qrs.ensure_tag(step.name)
    elif step.kind is StepKind.CREATE:
        assert step.definition is not None
        await qrs.create_custom_property_definition(step.definition)
    else:
        assert step.definition is not None
        await qrs.update_custom_property_definition(step.definition)


async def set_up(settings: Settings, *, dry_run: bool, say: Callable[[str], None]) -> Survey:
    """Survey and plan; unless ``dry_run``, carry the plan out on the source site, telling ``say``
    each step done, and survey again. Returns the last survey: its steps are what is left undone.

    A definition someone changed in the QMC meanwhile (409) is read and planned again, as is
    anything that changed while the steps ran, for at most ROUNDS rounds.
    """
    async with QrsClient.for_site(settings, Settings.SOURCE) as source:
        found = await survey(settings, source)
        for round_ in range(1, ROUNDS + 1):
            if dry_run or not found.plan.steps:
                break
            try:
                for step in found.plan.steps:
                    await apply_step(source, step)
                    say(f"done: {step.summary()}")
            except QrsConflict as exc:
                if round_ == ROUNDS:
                    raise
                say(f"{exc.path} was changed by someone else meanwhile; reading it again")
            found = await survey(settings, source)
        return found

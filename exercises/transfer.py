"""Exercises in and out of the console as files (docs/import-export.md).

YAML documents come one by one or in a zip, read within bounds (a zip's files, their
total size once expanded, names that stay inside it), and are saved all or none; they go
out as their stored text, one `<slug>.yaml` or a zip of them. A RabbitMQ definitions file
becomes a new exercise, or the topology of an existing one (exercises/definitions.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from typing import IO

from django.db import transaction
from django.utils.translation import gettext as _

from .definitions import (
    ImportedTopology,
    document_with_topology,
    exercise_definitions,
    exercise_document,
)
from .limits import LIMITS, excerpt
from .models import Exercise
from .services import exercise_save
from .spec import SpecError, parse_spec

#: A zip as uploaded, the YAML files in it, and what they hold once expanded: a zip
#: bomb is refused by the sizes its directory declares, and reading stops there anyway.
ZIP_BYTES = 8 * 1024 * 1024
ZIP_FILES = 200
ZIP_EXPANDED_BYTES = 32 * 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadRefused(Exception):
    """The upload as a whole cannot be read; `errors` say what and where."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class Document:
    """One YAML file of an upload: its name (a zip's path inside it) and its bytes."""

    name: str
    raw: bytes


def _kib(n: int) -> str:
    return _("{size} KiB").format(size=n // 1024)


def _mib(n: int) -> str:
    return _("{size} MiB").format(size=n // (1024 * 1024))


def _unsafe_name(name: str) -> bool:
    """A name that would leave the folder the zip were expanded in."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts


def uploaded_documents(
    *, name: str, file: IO[bytes], size: int
) -> tuple[list[Document], list[str]]:
    """The YAML documents of an upload (`name`, its `size` in bytes): one `.yaml` file or
    a `.zip` of them. Returns them and the names of the zip's other files, which are not
    read. Raises UploadRefused naming what is wrong."""
    lowered = name.lower()
    if lowered.endswith(YAML_SUFFIXES):
        if size > LIMITS.document_bytes:
            larger = _("{name}: the file is larger than the limit of {limit}")
            raise UploadRefused([larger.format(name=name, limit=_kib(LIMITS.document_bytes))])
        return [Document(name, file.read(LIMITS.document_bytes + 1))], []
    if not lowered.endswith(".zip"):
        neither = _("{name}: upload a .yaml file or a .zip of them")
        raise UploadRefused([neither.format(name=name)])
    if size > ZIP_BYTES:
        larger = _("{name}: the zip is larger than the limit of {limit}")
        raise UploadRefused([larger.format(name=name, limit=_mib(ZIP_BYTES))])
    try:
        archive = zipfile.ZipFile(io.BytesIO(file.read(ZIP_BYTES + 1)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        raise UploadRefused([_("{name}: not a zip file").format(name=name)]) from None
    with archive:
        return _zip_documents(name, archive)


def _zip_documents(name: str, archive: zipfile.ZipFile) -> tuple[list[Document], list[str]]:
    files = [info for info in archive.infolist() if not info.is_dir()]
    problems = [
        _(
            "{zip}: {name}: a name inside the zip must stay inside it (no '..', no absolute path)"
        ).format(zip=name, name=excerpt(info.filename, limit=100))
        for info in archive.infolist()
        if _unsafe_name(info.filename)
    ]
    if len(files) > ZIP_FILES:
        many = _("{zip}: the zip holds {count} files; at most {limit} are read")
        problems.append(many.format(zip=name, count=len(files), limit=ZIP_FILES))
    expanded = sum(info.file_size for info in files)
    if expanded > ZIP_EXPANDED_BYTES:
        bomb = _("{zip}: the zip expands to {size}; at most {limit} are read")
        problems.append(bomb.format(zip=name, size=_mib(expanded), limit=_mib(ZIP_EXPANDED_BYTES)))
    if problems:
        raise UploadRefused(problems)
    documents, others = [], []
    for info in files:
        if not info.filename.lower().endswith(YAML_SUFFIXES) or info.filename.startswith(
            "__MACOSX/"
        ):
            others.append(info.filename)
            continue
        if info.flag_bits & 0x1:
            encrypted = _("{name}: the file is encrypted")
            raise UploadRefused([encrypted.format(name=info.filename)])
        try:
            with archive.open(info) as member:
                documents.append(Document(info.filename, member.read(LIMITS.document_bytes + 1)))
        except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
            unreadable = _("{name}: cannot be read from the zip ({error})")
            raise UploadRefused(
                [unreadable.format(name=info.filename, error=excerpt(str(exc), limit=200))]
            ) from None
    if not documents:
        raise UploadRefused([_("{zip}: the zip holds no .yaml file").format(zip=name)])
    return documents, others


@dataclass
class Imported:
    """One document of an upload: what it is (its slug), what is wrong with it, and, once
    saved, the exercise and whether it is new."""

    name: str
    slug: str | None = None
    errors: list[str] = field(default_factory=list)
    exercise: Exercise | None = None
    created: bool = False
    changed: bool = False


def exercise_import_documents(
    *, documents: list[Document], author=None
) -> tuple[list[Imported], bool]:
    """Checks every document, then saves them all, or none if any is wrong: a new
    exercise for a new slug, a new version of an exercise whose slug exists. A built-in
    exercise's slug is refused (built-ins are edited as copies). Returns each document's
    result and whether they were saved."""
    results = []
    slugs: dict[str, str] = {}
    builtin = set(Exercise.objects.filter(builtin=True).values_list("slug", flat=True))
    for document in documents:
        result = Imported(document.name)
        results.append(result)
        try:
            spec = parse_spec(document.raw, source=document.name)
        except SpecError as exc:
            result.errors = list(exc.errors)
            continue
        result.slug = spec.slug
        if spec.slug in builtin:
            refused = _(
                "slug: {slug} is a built-in exercise, which is not replaced by an import: "
                "give the document another slug (built-ins are edited as copies)"
            )
            result.errors.append(refused.format(slug=spec.slug))
        elif spec.slug in slugs:
            again = _("slug: {slug} is the slug of {name} too: each exercise once per upload")
            result.errors.append(again.format(slug=spec.slug, name=slugs[spec.slug]))
        slugs.setdefault(spec.slug, document.name)
    if any(r.errors for r in results):
        return results, False
    existing = set(Exercise.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    with transaction.atomic():
        for result, document in zip(results, documents, strict=True):
            exercise, changed = exercise_save(source=document.raw.decode("utf-8"), author=author)
            result.exercise, result.changed = exercise, changed
            result.created = result.slug not in existing
    return results, True


def exercises_export_yaml(*, exercises: list[Exercise]) -> tuple[str, bytes]:
    """The exercises' stored texts: one as `<slug>.yaml`, several in `exercises.zip`.
    Returns the file's name and its bytes."""
    if len(exercises) == 1:
        return f"{exercises[0].slug}.yaml", exercises[0].source.encode("utf-8")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for exercise in exercises:
            archive.writestr(f"{exercise.slug}.yaml", exercise.source.encode("utf-8"))
    return "exercises.zip", buffer.getvalue()


def exercise_export_definitions(*, exercise: Exercise, vhost: str) -> dict:
    """The exercise's topology as a definitions file for `vhost`."""
    return exercise_definitions(exercise.spec.topology, vhost=vhost)


class TopologyRefused(Exception):
    """The imported topology cannot become the exercise it was meant for; `errors` say why."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


def exercise_import_topology(
    *,
    imported: ImportedTopology,
    exercise: Exercise | None = None,
    slug: str = "",
    title: str = "",
    version: str | None = None,
    author=None,
) -> Exercise:
    """A new exercise (`slug`, `title`) with the imported topology, saved unpublished
    until its steps are written; or, with `exercise`, a new version of it with its
    topology replaced. Raises TopologyRefused for a built-in exercise, a slug taken, or
    an exercise whose workloads or checks need what the topology no longer has."""
    if exercise is not None:
        if exercise.builtin:
            builtin = _("{slug} is a built-in exercise: import into a copy of it")
            raise TopologyRefused([builtin.format(slug=exercise.slug)])
        try:
            source = document_with_topology(exercise.source, imported.topology)
        except SpecError as exc:
            raise TopologyRefused(list(exc.errors)) from None
        return exercise_save(source=source, author=author)[0]
    if Exercise.objects.filter(slug=slug).exists():
        taken = _(
            "slug: {slug} is taken: choose another, or choose that exercise to replace its topology"
        )
        raise TopologyRefused([taken.format(slug=slug)])
    source = exercise_document(imported, slug=slug, title=title, version=version)
    with transaction.atomic():
        exercise = exercise_save(source=source, author=author)[0]
        # Learners see it once it has steps: the instructor publishes it then.
        Exercise.objects.filter(pk=exercise.pk).update(published=False)
    exercise.published = False
    return exercise

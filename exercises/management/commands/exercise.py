from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from exercises.services import exercise_load_builtin
from exercises.spec import SpecError, load_spec_file


class Command(BaseCommand):
    help = "Validate exercise files, or load the built-in catalogue into the database."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        validate = sub.add_parser("validate", help="check exercise YAML files")
        validate.add_argument("files", nargs="+", type=Path)
        sub.add_parser("load", help="load exercises/catalogue/*.yaml (idempotent)")

    def handle(self, *args, action, **options):
        if action == "validate":
            failed = False
            for path in options["files"]:
                try:
                    spec = load_spec_file(path)
                except FileNotFoundError:
                    self.stderr.write(f"{path}: no such file")
                    failed = True
                except SpecError as exc:
                    failed = True
                    for problem in exc.problems:
                        # file:line:column, as compilers say it, for editors to follow;
                        # a problem about the whole file is already named by the file.
                        where = f"{path}:{problem.line}:{problem.column}" if problem.line else path
                        named = problem.path == str(path)
                        what = problem.message if named else f"{problem.path}: {problem.message}"
                        self.stderr.write(f"{where}: {what}")
                else:
                    self.stdout.write(f"{path}: valid ({spec.slug}, {len(spec.steps)} steps)")
            if failed:
                raise SystemExit(1)
        else:
            try:
                results = exercise_load_builtin()
            except SpecError as exc:
                raise CommandError(f"no exercise was loaded:\n{exc}") from exc
            for exercise, changed in results:
                state = f"loaded, version {exercise.version}" if changed else "unchanged"
                self.stdout.write(f"{exercise.slug}: {state}")

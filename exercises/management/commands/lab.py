import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exercises.models import Exercise, LabSession
from exercises.services import LabError, lab_session_start, lab_session_stop


def _describe(session: LabSession) -> dict:
    return {
        "session": session.id,
        "vhost": session.vhost,
        "user": session.rabbit_user,
        "exercise": session.exercise.slug,
        "version": session.exercise_version,
        "state": session.state,
        "owner": session.owner.get_username(),
        "created_at": session.created_at.isoformat(),
        "workloads": {w.name: w.running for w in session.workloads.all()},
    }


class Command(BaseCommand):
    help = "Start, stop and list lab sessions."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        start = sub.add_parser("start", help="provision a lab for an exercise")
        start.add_argument("slug")
        start.add_argument("--run", action="store_true", help="start its workloads too")
        start.add_argument("--json", action="store_true")
        start.add_argument("--owner", default="admin", help="user who owns the lab")
        stop = sub.add_parser("stop", help="stop a lab and delete its vhost and user")
        stop.add_argument("session")
        ls = sub.add_parser("list", help="list labs that have not ended")
        ls.add_argument("--all", action="store_true", help="ended labs too")
        ls.add_argument("--json", action="store_true")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_start(self, *, slug, run, json: bool, owner, **_):
        exercise = Exercise.objects.filter(slug=slug).first()
        if exercise is None:
            raise CommandError(f"no exercise '{slug}' (run: python manage.py exercise load)")
        user, _ = get_user_model().objects.get_or_create(username=owner)
        try:
            session = lab_session_start(
                exercise=exercise, owner=user, run=run, enforce_quotas=False
            )
        except LabError as exc:
            raise CommandError(str(exc)) from exc
        if json:
            self.stdout.write(_dumps(_describe(session)))
        else:
            self.stdout.write(
                f"lab {session.id} started: vhost {session.vhost}, user {session.rabbit_user}"
                + (", workloads running" if run else "")
            )

    def handle_stop(self, *, session, **_):
        lab = LabSession.objects.filter(pk=session).first()
        if lab is None:
            raise CommandError(f"no lab session '{session}'")
        lab_session_stop(session=lab)
        self.stdout.write(f"lab {lab.id} stopped; vhost {lab.vhost} and its user deleted")

    def handle_list(self, *, all: bool, json: bool, **_):
        labs = LabSession.objects.select_related("exercise", "owner")
        if not all:
            labs = labs.exclude(state=LabSession.State.ENDED)
        rows = [_describe(lab) for lab in labs]
        if json:
            self.stdout.write(_dumps(rows))
            return
        for r in rows:
            running = sum(r["workloads"].values())
            self.stdout.write(
                f"{r['session']}  {r['state']:<8}  {r['exercise']:<24} {r['vhost']:<16} "
                f"{running}/{len(r['workloads'])} workloads running  {r['owner']}"
            )


def _dumps(data) -> str:
    return json.dumps(data)

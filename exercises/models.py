import secrets
import string

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.functional import cached_property

from labconsole.broker import amqp


class Exercise(models.Model):
    """An exercise as a versioned YAML document; the columns are read from it for listing."""

    slug = models.SlugField(max_length=63, unique=True)
    title = models.CharField(max_length=200)
    level = models.CharField(max_length=20)
    minutes = models.PositiveIntegerField(default=15)
    tags = models.JSONField(default=list, blank=True)
    source = models.TextField(help_text="The exercise as YAML (docs/exercise-format.md).")
    version = models.PositiveIntegerField(default=1, editable=False)
    builtin = models.BooleanField(default=False, editable=False)
    published = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    # The exercise this one was duplicated from (a built-in one is edited as a copy).
    copied_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="copies"
    )

    class Meta:
        ordering = ["level", "title"]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("exercise", args=[self.slug])

    @cached_property
    def spec(self):
        from .spec import parse_spec_cached

        return parse_spec_cached(self.source, source=self.slug)


class ExerciseVersion(models.Model):
    """One saved text of an exercise. `Exercise.source` is the newest; a lab keeps the text
    it started with in `LabSession.source`, so an edit never reaches a running lab."""

    exercise = models.ForeignKey(Exercise, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    source = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["exercise", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["exercise", "number"], name="unique_exercise_version")
        ]

    def __str__(self) -> str:
        return f"{self.exercise.slug} v{self.number}"


def _join_code() -> str:
    # No 0/O, 1/I/L: read off a projector and typed on a phone.
    alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(6))


class Classroom(models.Model):
    """A class an instructor runs: its learners join with `join_code` and do its exercises
    between `starts_at` and `ends_at`; its labs end with it."""

    name = models.CharField(max_length=200)
    instructor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="classes_taught"
    )
    exercises = models.ManyToManyField(Exercise, related_name="classes")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    capacity = models.PositiveIntegerField(null=True, blank=True)
    join_code = models.CharField(max_length=8, unique=True, default=_join_code)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # The instructor's latest message to the whole class, shown on every learner's page.
    message = models.TextField(blank=True, default="")
    message_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-starts_at"]
        verbose_name = "class"
        verbose_name_plural = "classes"

    def __str__(self) -> str:
        return self.name


class ClassMember(models.Model):
    """A learner in a class, under the name the class sees."""

    classroom = models.ForeignKey(Classroom, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="class_memberships"
    )
    display_name = models.CharField(max_length=40)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(fields=["classroom", "user"], name="unique_class_member"),
            models.UniqueConstraint(
                fields=["classroom", "display_name"], name="unique_class_display_name"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} in {self.classroom}"


class LabCluster(models.Model):
    """A local cluster of RabbitMQ nodes of the console's own (labconsole/cluster,
    docs/cluster.md) in slot `slot`, from which its node names, ports and directory follow.
    One row per cluster being booted, running or being removed, so that every web and
    worker process sees one pool; the row goes with the cluster."""

    class State(models.TextChoices):
        BOOTING = "booting"
        WARM = "warm"  # booted, no lab on it yet
        IN_USE = "in-use"
        STOPPING = "stopping"
        FAILED = "failed"

    slot = models.PositiveSmallIntegerField(unique=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.BOOTING)
    # Whom it serves: a class (its one cluster, for every lab of the class), or a learner
    # it was booted for (until `reserved_until`) or whose lab runs on it.
    classroom = models.ForeignKey(
        Classroom, on_delete=models.SET_NULL, null=True, blank=True, related_name="clusters"
    )
    reserved_for = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="lab_clusters",
    )
    reserved_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The last change of state: how long a boot or a removal has been under way.
    changed_at = models.DateTimeField(auto_now_add=True)
    # The last time a lab was seen on it (a class's cluster idles out from here).
    used_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["slot"]

    def __str__(self) -> str:
        return f"cluster {self.slot} ({self.state})"


def _session_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


class LabSession(models.Model):
    class State(models.TextChoices):
        STARTING = "starting"
        RUNNING = "running"
        ENDED = "ended"

    id = models.CharField(primary_key=True, max_length=16, default=_session_id, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labs"
    )
    exercise = models.ForeignKey(Exercise, on_delete=models.PROTECT, related_name="sessions")
    # The class the lab was started in: its instructor may watch, reset and end it.
    classroom = models.ForeignKey(
        Classroom, on_delete=models.SET_NULL, null=True, blank=True, related_name="labs"
    )
    # A throwaway lab of an unsaved text, started from the admin's "Try it".
    trial = models.BooleanField(default=False)
    # A team's sandbox: a lab without steps that every member of `team` (a Django group),
    # and everyone who joined through one of its invitations, sees and changes together.
    sandbox = models.BooleanField(default=False)
    team = models.ForeignKey(
        "auth.Group", on_delete=models.SET_NULL, null=True, blank=True, related_name="sandboxes"
    )
    # The cluster of the console's own the lab runs on (`broker: cluster`): its own, or its
    # class's; none once that cluster is removed.
    cluster = models.ForeignKey(
        LabCluster,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="labs",
        editable=False,
    )
    # The exercise as it was when the lab started: edits in the admin do not reach it.
    exercise_version = models.PositiveIntegerField()
    source = models.TextField()
    # The document the lab started from, kept when a workload added or removed on a
    # sandbox's page rewrites `source` (exercises/lab_controls.py); a reset starts from it.
    # Empty while `source` is still that document.
    origin = models.TextField(blank=True, default="", editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.STARTING)
    # Bumped by every reset: tasks of an earlier incarnation see it and stop.
    generation = models.PositiveIntegerField(default=1)
    rabbit_password = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # Why it ended, when the console ended it by itself: the page says so.
    end_reason = models.CharField(
        max_length=10, choices=[("idle", "idle")], blank=True, default="", editable=False
    )
    # Ended, but its vhost and user could not be deleted yet (the broker was away): the
    # sweeper deletes them when the broker is back (exercises/sweep.py).
    teardown_pending = models.BooleanField(default=False, editable=False)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    # The lab's monitor: what a worker taking it over resumes from (its flow record,
    # checks, sequence numbers), which worker process runs it, and until when its lease
    # holds (exercises/runtime.py).
    monitor_state = models.JSONField(default=dict, blank=True, editable=False)
    # Step id -> when the learner was first shown it (ISO 8601), in the order they were:
    # the first step when the lab starts, each next one when the learner moves on to it.
    # A step's checkpoints count only what happened after that moment (exercises/checks.py).
    steps_shown = models.JSONField(default=dict, blank=True, editable=False)
    # The lab's topology as the learner changed it from the page (exchanges, queues and
    # bindings as in the exercise's document); empty while it is the exercise's own.
    # `spec` reads it, so the page, the monitor and the checks all see the edited one.
    topology = models.JSONField(default=dict, blank=True, editable=False)
    monitor_owner = models.CharField(max_length=120, blank=True, default="", editable=False)
    monitor_lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.vhost} ({self.exercise.slug}, {self.state})"

    def get_absolute_url(self) -> str:
        return reverse("lab", args=[self.id])

    @property
    def vhost(self) -> str:
        return amqp.lab_vhost(self.id)

    @property
    def rabbit_user(self) -> str:
        return amqp.lab_vhost(self.id)

    @property
    def is_active(self) -> bool:
        return self.state != self.State.ENDED

    @cached_property
    def spec(self):
        """The exercise the lab runs, with the lab's own topology once it was edited."""
        from .spec import parse_spec_cached, spec_with_topology_cached

        spec = parse_spec_cached(self.source, source=self.vhost)
        if self.topology:
            spec = spec_with_topology_cached(self.source, self.topology)
        return spec

    @property
    def broker(self):
        """The broker the lab runs on, as its exercise says (labconsole/broker/brokers.py):
        the shared one, or the slot of the cluster it was given."""
        from labconsole.broker.brokers import lab_broker

        return lab_broker(self.spec.broker, slot=self.cluster.slot if self.cluster else None)


class Workload(models.Model):
    """A producer or consumer of a lab; `settings` is what the learner can change live."""

    class Kind(models.TextChoices):
        PRODUCER = "producer"
        CONSUMER = "consumer"

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="workloads")
    name = models.CharField(max_length=63)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    settings = models.JSONField(default=dict)
    running = models.BooleanField(default=False)
    # Bumped each time the workload is started: a late task of an earlier run exits.
    run = models.PositiveIntegerField(default=0)
    # What a worker taking the workload over resumes from (messages sent, counters), which
    # worker process runs it, and until when its lease holds (exercises/runtime.py).
    progress = models.JSONField(default=dict, blank=True, editable=False)
    owner = models.CharField(max_length=120, blank=True, default="", editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["kind", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "name"], name="unique_workload_name")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


class CheckpointResult(models.Model):
    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="results")
    checkpoint = models.CharField(max_length=63)
    passed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "checkpoint"], name="unique_checkpoint")
        ]

    def __str__(self) -> str:
        return f"{self.session_id}: {self.checkpoint}"


class SandboxInvite(models.Model):
    """A link that lets whoever opens it into a sandbox, until its owner revokes it."""

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="invites")
    token = models.CharField(max_length=43, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation to {self.session_id}"


class SandboxMember(models.Model):
    """Someone who joined a sandbox through an invitation (a team's group members need none)."""

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sandbox_memberships"
    )
    invite = models.ForeignKey(
        SandboxInvite, on_delete=models.SET_NULL, null=True, blank=True, related_name="members"
    )
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="unique_sandbox_member")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.session_id}"


class RateEvent(models.Model):
    """One lab start or page publish by a user, kept for a minute: the per-minute limits
    count these rows (exercises/quotas.py), so they hold across every web process."""

    class Action(models.TextChoices):
        START = "start"
        PUBLISH = "publish"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rate_events"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    at = models.DateTimeField(db_index=True)
    # The lab a publish went to: a sandbox's total rate counts its own page's publishes.
    session = models.ForeignKey(
        "LabSession", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )

    class Meta:
        indexes = [models.Index(fields=["user", "action", "at"], name="rate_event_window")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.action} at {self.at:%H:%M:%S}"


class SandboxViewer(models.Model):
    """An open page of a sandbox, as its socket last said (docs/sandboxes.md, "Presence"):
    written on connecting and with every ping, deleted on closing, so the list of
    sandboxes shows who is on each from any web process. A page whose browser crashed
    stays until it is older than the presence timeout, which readers ignore."""

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="viewers")
    socket = models.CharField(max_length=32, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=150)
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.name} on {self.session_id}"

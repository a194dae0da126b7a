"""Forms for the lab's controls: every value a learner types is checked here first."""

from __future__ import annotations

import json
from typing import get_args

from django import forms
from django.utils.formats import number_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from labconsole.workloads.load import LOAD_PRESETS

from .limits import LIMITS
from .spec import (
    PREFETCH_MAX,
    PREFETCH_MIN,
    RATE_MAX,
    RATE_MIN,
    TX_BATCH_MAX,
    Behaviour,
    Binding,
    Consumer,
    Exchange,
    Policy,
    Queue,
)

PREFETCH_HELP = _(
    "0 means no limit: the broker sends the consumer every message it can, all of them "
    "unacknowledged at once."
)


class ProducerForm(forms.Form):
    rate = forms.FloatField(min_value=RATE_MIN, max_value=RATE_MAX, label=_("rate (msg/s)"))
    routing_key = forms.CharField(
        max_length=255, required=False, strip=False, label=_("routing key")
    )
    # Only a transactional producer's form has it.
    tx_batch = forms.IntegerField(
        min_value=1, max_value=TX_BATCH_MAX, required=False, label=_("commit every")
    )

    def clean(self):
        data = super().clean()
        if data.get("tx_batch") is None:
            data.pop("tx_batch", None)
        return data


# What the page calls each load preset (labconsole/workloads/load.py).
LOAD_PRESET_NAMES = {"spike": _("spike"), "stress": _("stress")}


def load_preset_label(name: str) -> str:
    """ "stress: 5,000 msg/s for 30 s", in the reader's language."""
    preset = LOAD_PRESETS[name]
    return gettext("%(name)s: %(rate)s msg/s for %(seconds)s s") % {
        "name": LOAD_PRESET_NAMES.get(name, name),
        "rate": number_format(preset.rate, decimal_pos=0, force_grouping=True),
        "seconds": number_format(preset.seconds, decimal_pos=0),
    }


class LoadForm(forms.Form):
    """A load preset to run on a producer."""

    preset = forms.ChoiceField(label=_("load"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["preset"].choices = [(name, load_preset_label(name)) for name in LOAD_PRESETS]


class ConsumerForm(forms.Form):
    prefetch = forms.IntegerField(
        min_value=PREFETCH_MIN, max_value=PREFETCH_MAX, label="prefetch", help_text=PREFETCH_HELP
    )
    ack = forms.ChoiceField(choices=[("manual", _("manual")), ("auto", _("auto"))], label="ack")
    fail = forms.FloatField(min_value=0, max_value=1, label=_("failure rate"))
    on_fail = forms.ChoiceField(
        choices=[("reject", "basic.reject"), ("nack", "basic.nack")], label=_("on failure")
    )
    requeue = forms.BooleanField(required=False, label="requeue")
    processing_ms = forms.IntegerField(min_value=0, max_value=600000, label=_("processing (ms)"))

    def clean(self):
        data = super().clean()
        if data.get("ack") == "auto" and data.get("fail"):
            raise forms.ValidationError(
                _(
                    "an auto-ack consumer cannot fail messages: the broker counts them as "
                    "acknowledged when it sends them. Set the failure rate to 0 or use "
                    "manual ack."
                )
            )
        return data


class PublishForm(forms.Form):
    exchange = forms.CharField(max_length=255, required=False, strip=False, label=_("exchange"))
    routing_key = forms.CharField(
        max_length=255, required=False, strip=False, label=_("routing key")
    )
    headers = forms.CharField(required=False, widget=forms.Textarea, label=_("headers"))
    body = forms.CharField(
        required=False, widget=forms.Textarea, max_length=64 * 1024, label=_("body")
    )
    persistent = forms.BooleanField(required=False, label="persistent")
    priority = forms.IntegerField(min_value=0, max_value=255, required=False, label=_("priority"))
    expiration = forms.IntegerField(min_value=0, required=False, label=_("expiration (ms)"))
    mandatory = forms.BooleanField(required=False, label="mandatory")

    def __init__(self, *args, exchanges: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.exchanges = exchanges

    def clean_exchange(self):
        exchange = self.cleaned_data["exchange"]
        if exchange not in self.exchanges:
            raise forms.ValidationError(
                gettext("'{exchange}' is not an exchange of this lab").format(exchange=exchange)
            )
        return exchange

    def clean_headers(self):
        return key_values(self.cleaned_data["headers"])


def key_values(text: str) -> dict:
    """`key=value` per line; numbers and true/false stay numbers and booleans, so that
    x-match, x-max-priority and friends work; anything else is a string."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(
                gettext("line {number}: write key=value, got {line}").format(
                    number=number, line=repr(line)
                )
            )
        value = value.strip()
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        found[key.strip()] = parsed if isinstance(parsed, int | float | bool) else value
    return found


# --- the lab's topology ----------------------------------------------------------------------
# These forms only read what was typed; the rules (names, types, arguments and their bounds,
# what must exist) are the exercise format's, checked by exercises.spec in the service.

ARGUMENTS_HELP = _("key=value, one a line")


def _choices(model, field: str) -> list[tuple[str, str]]:
    return [(v, v) for v in get_args(model.model_fields[field].annotation)]


class _ArgumentsForm(forms.Form):
    arguments = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea,
        max_length=LIMITS.text_chars,
        label=_("arguments"),
        help_text=ARGUMENTS_HELP,
    )

    def clean_arguments(self):
        return key_values(self.cleaned_data["arguments"])


class ExchangeForm(_ArgumentsForm):
    name = forms.CharField(strip=False, label=_("name"))
    type = forms.ChoiceField(choices=_choices(Exchange, "type"), label=_("type"))
    durable = forms.BooleanField(required=False, label="durable")
    internal = forms.BooleanField(required=False, label="internal")

    def item(self) -> dict:
        return {**self.cleaned_data, "auto_delete": False}


class QueueForm(_ArgumentsForm):
    name = forms.CharField(strip=False, label=_("name"))
    type = forms.ChoiceField(choices=_choices(Queue, "type"), label=_("type"))
    durable = forms.BooleanField(required=False, label="durable")

    def item(self) -> dict:
        return {**self.cleaned_data, "auto_delete": False}


class BindingForm(_ArgumentsForm):
    source = forms.CharField(strip=False, label=_("from exchange"))
    destination = forms.CharField(strip=False, label=_("to"))
    destination_type = forms.ChoiceField(
        choices=[("queue", _("queue")), ("exchange", _("exchange"))], label=_("to a")
    )
    routing_key = forms.CharField(
        required=False, strip=False, max_length=LIMITS.text_chars, label=_("routing key")
    )

    def item(self) -> dict:
        return dict(self.cleaned_data)


class DeleteForm(forms.Form):
    kind = forms.ChoiceField(choices=[("exchange", _("exchange")), ("queue", _("queue"))])
    name = forms.CharField(strip=False, label=_("name"))

    def item(self) -> dict:
        return {"name": self.cleaned_data["name"]}


def binding_value(binding: dict) -> str:
    """A binding as the unbind form's choice sends it back: all that names it."""
    return json.dumps([binding[f] for f in Binding.model_fields], sort_keys=True)


class UnbindForm(forms.Form):
    binding = forms.CharField(label=_("binding"), max_length=LIMITS.text_chars)

    def clean_binding(self):
        try:
            values = json.loads(self.cleaned_data["binding"])
            item = dict(zip(Binding.model_fields, values, strict=True))
        except (ValueError, TypeError):
            raise forms.ValidationError(gettext("choose a binding from the list")) from None
        return item

    def item(self) -> dict:
        return self.cleaned_data["binding"]


def form_errors(form: forms.Form) -> str:
    """One line per problem, naming the field: what a person needs to fix it."""
    lines = []
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{form.fields[field].label or field}: "
        lines.extend(f"{label}{e}" for e in errors)
    return "; ".join(lines)


# --- a sandbox's controls (exercises/lab_controls.py) ----------------------------------------
# As for the topology, these forms only read what was typed: the bounds and rules of a policy
# and of a workload are the exercise format's (exercises.spec), checked in the service.


class PolicyForm(forms.Form):
    name = forms.CharField(strip=False, label=_("name"))
    pattern = forms.CharField(strip=False, label=_("pattern"))
    apply_to = forms.ChoiceField(choices=_choices(Policy, "apply_to"), label=_("apply to"))
    priority = forms.IntegerField(required=False, label=_("priority"))
    definition = forms.CharField(
        widget=forms.Textarea,
        max_length=LIMITS.text_chars,
        label=_("definition"),
        help_text=_('key=value, one a line, or a JSON object like {"max-length": 10}'),
    )

    def clean_definition(self):
        text = self.cleaned_data["definition"]
        if not text.strip().startswith("{"):
            return key_values(text)
        try:
            found = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(
                gettext("not a JSON object: {error}").format(error=exc)
            ) from None
        if not isinstance(found, dict):
            raise forms.ValidationError(gettext('write a JSON object, like {"max-length": 10}'))
        return found

    def item(self) -> dict:
        data = dict(self.cleaned_data)
        if data["priority"] is None:
            data["priority"] = 0
        return data


class NameForm(forms.Form):
    """What a deletion names: a policy, a workload."""

    name = forms.CharField(strip=False, label=_("name"))


def _given(data: dict) -> dict:
    """The fields the person filled in: the others take the format's defaults."""
    return {k: v for k, v in data.items() if v not in (None, "")}


class AddProducerForm(forms.Form):
    name = forms.CharField(strip=False, label=_("name"))
    exchange = forms.CharField(required=False, strip=False, label=_("exchange"))
    routing_keys = forms.CharField(
        required=False,
        strip=False,
        max_length=LIMITS.text_chars,
        label=_("routing key"),
        help_text=_("several keys, separated by commas, are used in turn"),
    )
    rate = forms.FloatField(required=False, label=_("rate (msg/s)"))
    count = forms.IntegerField(required=False, label=_("count"))
    payload = forms.CharField(required=False, strip=False, label=_("payload"))
    confirms = forms.BooleanField(required=False, label="confirms")
    mandatory = forms.BooleanField(required=False, label="mandatory")
    persistent = forms.BooleanField(required=False, label="persistent")
    start = forms.BooleanField(required=False, label=_("start now"))

    def item(self) -> dict:
        data = dict(self.cleaned_data)
        keys = [k.strip() for k in data.pop("routing_keys").split(",")]
        item = _given({k: data[k] for k in ("name", "rate", "count", "payload")})
        item["exchange"] = data["exchange"]
        if len(keys) > 1:
            item["routing_keys"] = keys
        else:
            item["routing_key"] = keys[0]
        item.update(confirms=data["confirms"], mandatory=data["mandatory"])
        item["properties"] = {"persistent": data["persistent"]}
        return item


class AddConsumerForm(forms.Form):
    name = forms.CharField(strip=False, label=_("name"))
    queue = forms.CharField(strip=False, label=_("queue"))
    prefetch = forms.IntegerField(required=False, label="prefetch", help_text=PREFETCH_HELP)
    ack = forms.ChoiceField(choices=_choices(Consumer, "ack"), required=False, label="ack")
    fail = forms.FloatField(required=False, label=_("failure rate"))
    on_fail = forms.ChoiceField(
        choices=_choices(Behaviour, "on_fail"), required=False, label=_("on failure")
    )
    requeue = forms.BooleanField(required=False, label="requeue")
    processing_ms = forms.IntegerField(required=False, label=_("processing (ms)"))
    stream_offset = forms.CharField(required=False, label=_("stream offset"))
    start = forms.BooleanField(required=False, label=_("start now"))

    def item(self) -> dict:
        data = self.cleaned_data
        item = _given({k: data[k] for k in ("name", "queue", "prefetch", "ack")})
        offset = data["stream_offset"].strip()
        if offset:
            item["stream_offset"] = int(offset) if offset.isdigit() else offset
        item["behaviour"] = {
            **_given({k: data[k] for k in ("fail", "processing_ms", "on_fail")}),
            "requeue": data["requeue"],
        }
        return item


class QueueActionForm(forms.Form):
    queue = forms.CharField(strip=False, label=_("queue"))
    action = forms.ChoiceField(choices=[("purge", _("purge")), ("peek", _("peek"))])

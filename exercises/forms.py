"""Forms for the lab's controls: every value a learner types is checked here first."""

from __future__ import annotations

import json

from django import forms
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _


class ProducerForm(forms.Form):
    rate = forms.FloatField(min_value=0.2, max_value=10000, label=_("rate (msg/s)"))
    routing_key = forms.CharField(
        max_length=255, required=False, strip=False, label=_("routing key")
    )


class ConsumerForm(forms.Form):
    prefetch = forms.IntegerField(min_value=0, max_value=65535, label="prefetch")
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
        """`key=value` per line; numbers stay numbers, so x-match and friends work."""
        headers = {}
        for number, line in enumerate(self.cleaned_data["headers"].splitlines(), 1):
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
            headers[key.strip()] = parsed if isinstance(parsed, int | float | bool) else value
        return headers


def form_errors(form: forms.Form) -> str:
    """One line per problem, naming the field: what a person needs to fix it."""
    lines = []
    for field, errors in form.errors.items():
        label = "" if field == "__all__" else f"{form.fields[field].label or field}: "
        lines.extend(f"{label}{e}" for e in errors)
    return "; ".join(lines)

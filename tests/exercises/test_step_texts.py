"""A step names the page's controls as the page shows them, in the page's language: every
name a step's instructions or hints put in bold or in quotation marks is the label of a
field, the text of a button, an option of a list, a title of the controls panel, or an
alert rule's title or state on the lab page rendered in that language
(docs/exercise-format.md, "Naming the page's controls")."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.conf import settings

from exercises.services import CATALOGUE_DIR, lab_session_start
from exercises.spec import load_spec_file
from tests.support import text_of

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
# "…", “…”, «…» and „…“; code spans are left out before looking for them.
QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|«([^»]+)»|„([^“]+)“')


class Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element | str] = []

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def text(self, *, skip: tuple[str, ...] = ()) -> str:
        parts = [
            child if isinstance(child, str) else child.text(skip=skip)
            for child in self.children
            if isinstance(child, str) or child.tag not in skip
        ]
        return " ".join("".join(parts).split())

    def has_class(self, name: str) -> bool:
        return name in (self.attrs.get("class") or "").split()

    def inside(self, predicate) -> bool:
        node = self.parent
        while node is not None:
            if predicate(node):
                return True
            node = node.parent
        return False


class Tree(HTMLParser):
    """The page as a tree of elements: enough HTML for a page this console renders."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Element("#document", {}, None)
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs}, self.node)
        self.node.children.append(element)
        if tag not in VOID:
            self.node = element

    def handle_endtag(self, tag):
        node = self.node
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.node = node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def control_names(root: Element) -> set[str]:
    """What the page calls its controls: a field's label (its own words, not the small
    print beside them), a button's text (both of a start/stop toggle), an option, and a
    title of the controls panel (the publish form's name)."""
    names: set[str] = set()
    in_controls = lambda node: node.attrs.get("id") == "controls"  # noqa: E731
    for element in root.iter():
        if element.tag == "label" and element.has_class("field"):
            spans = [c for c in element.children if isinstance(c, Element) and c.tag == "span"]
            names.update(span.text(skip=("small",)) for span in spans)
        elif element.tag in ("button", "option"):
            names.add(element.text())
            names.update(v for k, v in element.attrs.items() if k.startswith("data-label-"))
        elif (
            element.tag == "h2" and element.has_class("panel-title") and element.inside(in_controls)
        ):
            names.add(element.text())
        elif element.has_class("alert-name") or element.has_class("alert-state"):
            names.add(element.text())  # an alert rule above the diagram, and its state
    return names - {""}


def named_in_steps(root: Element) -> dict[str, list[str]]:
    """Each step's names in bold or in quotation marks, from its instructions and hints."""
    named: dict[str, list[str]] = {}
    for step in root.iter():
        if step.tag != "li" or not step.has_class("step"):
            continue
        names = named.setdefault(step.attrs["data-step"], [])
        for prose in step.iter():
            if not prose.has_class("prose"):
                continue
            names.extend(e.text() for e in prose.iter() if e.tag in ("strong", "b"))
            words = prose.text(skip=("code", "pre"))
            names.extend(
                " ".join(next(g for g in m.groups() if g).split()) for m in QUOTED.finditer(words)
            )
    return named


LANGUAGES = [code for code, _ in settings.LANGUAGES]
# The labs on the local cluster are read in tests/cluster, which starts the cluster.
SHARED = sorted(
    p.stem for p in CATALOGUE_DIR.glob("*.yaml") if load_spec_file(p).broker == "shared"
)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("slug", SHARED)
def test_steps_name_the_controls_the_page_shows(
    client_in, catalogue, learner, labs, slug, language
):
    session = lab_session_start(exercise=catalogue[slug], owner=learner, run=False)
    assert_steps_name_the_controls(client_in, session, language)


def assert_steps_name_the_controls(client, session, language: str) -> None:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    page = text_of(client.get(session.get_absolute_url()))
    assert f'<html lang="{language}">' in page
    root = Tree(page).root

    controls = control_names(root)
    named = named_in_steps(root)
    assert len(named) == len(session.spec.steps), named
    assert any(named.values()), "no step names a control: is the page read right?"
    wrong = {step: [n for n in names if n not in controls] for step, names in named.items()}
    wrong = {step: names for step, names in wrong.items() if names}
    assert not wrong, (
        f"named by steps but not on the {language} page: {wrong}; the page has {sorted(controls)}"
    )


def test_the_reading_of_the_page_finds_labels_buttons_options_and_bold():
    """The reader above on a page of known content, so it cannot pass by finding nothing."""
    page = """
      <aside id="controls"><h2 class="panel-title">Publish one message</h2>
        <label class="field"><span>Headers <small>key=value</small></span></label>
        <label class="field field-check"><input type="checkbox"><span>requeue</span></label>
        <button data-label-start="Start" data-label-stop="Stop"><svg></svg>Stop</button>
        <select><option value="a">sensors</option></select></aside>
      <ol><li class="step" data-step="one"><div class="prose"><p>Press <strong>Publish</strong>,
        then «Очистить» and "Apply" with <code>"not a name"</code>.</p></div></li></ol>
    """
    root = Tree(page).root
    assert control_names(root) == {
        "Publish one message",
        "Headers",
        "requeue",
        "Start",
        "Stop",
        "sensors",
    }
    assert named_in_steps(root) == {"one": ["Publish", "Очистить", "Apply"]}

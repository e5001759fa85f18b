"""The hand-built SendGrid body equals the one the ``sendgrid`` library's own ``Mail``
helper builds (tests/support/sendgrid_library.py), for generated configs and messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sendgrid.helpers.mail import ApiKeyIncludedException

from herald.adapters.sendgrid_mailer import SendGridConfig, SendGridMailer, mail_body
from herald.domain.errors import DeliveryError
from herald.ports.messages import EmailMessage
from tests.support.sendgrid_library import build_mail

bare = st.from_regex(r"[a-z][a-z0-9.]{0,12}@[a-z]{1,10}\.(com|org|io)", fullmatch=True)
display_name = st.from_regex(r"[A-Za-z][A-Za-z .'-]{0,15}", fullmatch=True)
# Addresses as settings and `herald run --to` may hold them: bare, with a display name,
# padded (a secret's trailing newline), with a comment.
address = st.one_of(
    bare,
    st.builds(lambda n, a: f"{n} <{a}>", display_name, bare),
    st.builds(lambda n, a: f'"{n}" <{a}>', display_name, bare),
    bare.map(lambda a: f" {a}\n"),
    st.builds(lambda a, n: f"{a} ({n})", bare, display_name),
)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
token = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)

configs = st.builds(
    SendGridConfig,
    api_key=st.just("SG.key"),
    from_email=address,
    from_name=st.one_of(st.just(""), text),
    reply_to=st.one_of(st.just(""), address),
    asm_group_id=st.one_of(st.none(), st.integers(1, 99_999)),
    open_tracking=st.booleans(),
    click_tracking=st.booleans(),
    categories=st.lists(token, max_size=12).map(tuple),
)
messages = st.builds(
    EmailMessage,
    to=address,
    subject=text.filter(bool),
    text=text,
    html=text,
    custom_args=st.dictionaries(token, token, max_size=4),
    categories=st.lists(token, max_size=12).map(tuple),
    headers=st.dictionaries(
        st.sampled_from(["List-Unsubscribe", "List-Unsubscribe-Post", "X-Report", "Reply-To", "X-Run"]),
        st.one_of(st.just("<https://herald.example/unsubscribe/t>"), st.just("<mailto:u@x.io>"), token),
        max_size=4,
    ),
)


@settings(max_examples=300, deadline=None)
@given(configs, messages)
def test_the_body_is_the_one_the_library_builds(config: SendGridConfig, message: EmailMessage) -> None:
    assert mail_body(config, message) == build_mail(config, message).get()


@pytest.mark.parametrize("field", ["text", "html"])
def test_an_api_key_in_the_content_is_refused_permanently_like_the_library_does(field: str) -> None:
    config = SendGridConfig(api_key="SG.key", from_email="reports@example.com")
    leaked = "SG.abcdefghij.klmnopqrstuv pasted into a summary"  # the library matches at the start
    message = EmailMessage(**{"to": "a@example.com", "subject": "s", "text": "t", "html": "h", field: leaked})
    with pytest.raises(ApiKeyIncludedException):
        build_mail(config, message).get()  # the oracle refuses it ...
    with pytest.raises(DeliveryError) as raised:  # ... and so does the mailer, before any request
        SendGridMailer(config, pool=_NoRequests()).send(message)  # type: ignore[arg-type]
    assert raised.value.permanent


class _NoRequests:
    def request(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a body with an API key in it was sent")


def test_the_body_serialises_as_json() -> None:
    config = SendGridConfig(api_key="SG.key", from_email="reports@example.com", from_name="Herald")
    message = EmailMessage(to="a@example.com", subject="Board pack — 2026-11", text="t", html="<p>h</p>")
    sent = json.loads(json.dumps(mail_body(config, message)))
    assert sent["from"] == {"email": "reports@example.com", "name": "Herald"}

"""The mail/send body as the ``sendgrid`` library's own ``Mail`` helper builds it.

Herald's mailer builds the body by hand (``herald.adapters.sendgrid_mailer.mail_body``,
for speed); this is the independent oracle it is held equal to, and the way the
benchmark's naive loop (the library used as its README shows) builds its messages.
"""

from __future__ import annotations

from sendgrid.helpers.mail import (
    Asm,
    Category,
    ClickTracking,
    CustomArg,
    From,
    GroupId,
    Header,
    Mail,
    OpenTracking,
    Personalization,
    ReplyTo,
    To,
    TrackingSettings,
)

from herald.adapters.sendgrid_mailer import SendGridConfig, _categories, _headers
from herald.ports.messages import EmailMessage


def build_mail(config: SendGridConfig, message: EmailMessage) -> Mail:
    """One personalization with one ``to``; custom args ride on the personalization
    (SendGrid's spec types message-level ``custom_args`` as a string)."""
    mail = Mail(
        from_email=From(config.from_email, config.from_name or None),
        subject=message.subject,
        plain_text_content=message.text or None,
        html_content=message.html or None,
    )
    personalization = Personalization()
    personalization.add_to(To(message.to))
    for key, value in message.custom_args.items():
        personalization.add_custom_arg(CustomArg(key, str(value)))
    mail.add_personalization(personalization)
    if config.reply_to:
        mail.reply_to = ReplyTo(config.reply_to)
    # The helper inserts at the front of its lists, so add in reverse to keep the order.
    for category in reversed(_categories(config.categories, message.categories)):
        mail.add_category(Category(category))
    mail.tracking_settings = TrackingSettings(
        click_tracking=ClickTracking(config.click_tracking, config.click_tracking),
        open_tracking=OpenTracking(config.open_tracking),
    )
    for name, value in reversed(_headers(config, message.headers).items()):
        mail.add_header(Header(name, value))
    if config.asm_group_id is not None:
        mail.asm = Asm(GroupId(config.asm_group_id))
    return mail

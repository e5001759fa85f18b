"""PubSubPublisher against Google's Pub/Sub emulator: publish then pull, and a push
subscription to a local endpoint whose envelope parses with parse_push_envelope."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.cloud import pubsub_v1
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

from herald.adapters.embedded.log_publisher import LogPublisher
from herald.adapters.gcp.pubsub import PubSubPublisher, build_publisher_client
from herald.ports.events import EventPublisher, PublishError
from herald.settings import load_settings
from herald.web.push_envelope import parse_push_envelope
from tests.support.gcp_emulators import PROJECT, HttpReceiver

pytestmark = pytest.mark.emulator


@pytest.fixture
def publisher_client(pubsub_emulator: str) -> Iterator[pubsub_v1.PublisherClient]:
    client = build_publisher_client(pubsub_emulator)
    yield client
    client.stop()


@pytest.fixture
def subscriber(pubsub_emulator: str) -> Iterator[pubsub_v1.SubscriberClient]:
    client = pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(pubsub_emulator))
    )
    yield client
    client.close()


@pytest.fixture
def topic_id(publisher_client: pubsub_v1.PublisherClient) -> str:
    topic = f"herald-runs-{uuid.uuid4().hex[:8]}"
    publisher_client.create_topic(name=f"projects/{PROJECT}/topics/{topic}", timeout=10)
    return topic


def pull_all(subscriber: pubsub_v1.SubscriberClient, subscription: str, count: int, timeout: float = 20) -> list[Any]:
    """Pull until ``count`` messages arrived (bounded), acknowledging them."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages], timeout=5
            )
            received.extend(m.message for m in response.received_messages)
    assert len(received) >= count, f"pulled {len(received)} of {count} messages in {timeout} s"
    return received


def test_publish_then_pull(
    publisher_client: pubsub_v1.PublisherClient, subscriber: pubsub_v1.SubscriberClient, topic_id: str
) -> None:
    subscription = f"projects/{PROJECT}/subscriptions/{topic_id}-pull"
    subscriber.create_subscription(
        request={
            "name": subscription,
            "topic": f"projects/{PROJECT}/topics/{topic_id}",
            "enable_message_ordering": True,
        },
        timeout=10,
    )
    publisher: EventPublisher = PubSubPublisher(publisher_client, PROJECT, {"runs": topic_id}, timeout=10)

    publisher.publish("runs", {"type": "run.completed", "run_id": "r1", "status": "succeeded"}, ordering_key="rep-1")
    publisher.publish("runs", {"type": "run.completed", "run_id": "r2", "status": "partial"}, ordering_key="rep-1")

    messages = pull_all(subscriber, subscription, 2)
    assert [json.loads(m.data)["run_id"] for m in messages] == ["r1", "r2"]
    assert messages[0].attributes["type"] == "run.completed"
    assert messages[0].ordering_key == "rep-1"


def test_push_subscription_envelope_parses(
    publisher_client: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    topic_id: str,
    http_receiver: HttpReceiver,
) -> None:
    subscription = f"projects/{PROJECT}/subscriptions/{topic_id}-push"
    subscriber.create_subscription(
        name=subscription,
        topic=f"projects/{PROJECT}/topics/{topic_id}",
        push_config={"push_endpoint": f"{http_receiver.url}/pubsub/events"},
        timeout=10,
    )
    http_receiver.status = 204  # acknowledged
    PubSubPublisher(publisher_client, PROJECT, {"deliveries": topic_id}).publish(
        "deliveries", {"type": "delivery.failed", "delivery_id": "d1", "error": "mailbox full"}
    )

    (received,) = http_receiver.wait_for(1)
    assert received.method == "POST"
    assert received.path == "/pubsub/events"
    message = parse_push_envelope(received.body)
    assert message.data == {"type": "delivery.failed", "delivery_id": "d1", "error": "mailbox full"}
    assert message.attributes == {"type": "delivery.failed"}
    assert message.subscription == subscription
    assert message.message_id
    assert message.publish_time is not None


def test_missing_topic_is_a_permanent_error(publisher_client: pubsub_v1.PublisherClient) -> None:
    publisher = PubSubPublisher(publisher_client, PROJECT, {"runs": f"absent-{uuid.uuid4().hex[:8]}"}, timeout=5)
    with pytest.raises(PublishError) as caught:
        publisher.publish("runs", {"type": "x"}, ordering_key="k")
    assert caught.value.permanent is True
    with pytest.raises(PublishError) as caught:  # the ordering key was resumed, so it fails the same way
        publisher.publish("runs", {"type": "x"}, ordering_key="k")
    assert caught.value.permanent is True


def test_unknown_key_and_non_json_events_are_refused(publisher_client: pubsub_v1.PublisherClient) -> None:
    publisher = PubSubPublisher(publisher_client, PROJECT, {"runs": "herald-runs"})
    with pytest.raises(PublishError, match="no topic"):
        publisher.publish("nope", {})
    with pytest.raises(PublishError, match="not JSON"):
        publisher.publish("runs", {"when": object()})


def test_from_settings_maps_topic_keys(pubsub_emulator: str) -> None:
    settings = load_settings(gcp_project="p", pubsub_emulator_host=pubsub_emulator)
    publisher = PubSubPublisher.from_settings(settings)
    try:
        assert publisher.topics == {
            "runs": "projects/p/topics/herald-runs",
            "deliveries": "projects/p/topics/herald-deliveries",
        }
    finally:
        publisher.client.stop()


def test_log_publisher_keeps_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    publisher: EventPublisher = LogPublisher(keep=2)
    with caplog.at_level("INFO"):
        for n in range(3):
            publisher.publish("runs", {"type": "run.completed", "n": n}, ordering_key="r")
    assert [event["n"] for _, event, _ in publisher.published] == [1, 2]  # type: ignore[attr-defined]
    assert "run.completed" in caplog.text
    with pytest.raises(PublishError):
        publisher.publish("runs", {"x": object()})

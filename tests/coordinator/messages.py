"""Reply messages for coordinator unit tests, built without an engine."""

from flwr.app import MessageType
from flwr.app.metadata import Metadata


def reply_metadata(
    node_id: int, message_type: str = MessageType.TRAIN, reply_to_message_id: str = "m"
) -> Metadata:
    """Metadata of a reply from ``node_id`` in round 1, as a grid would hand it over."""
    return Metadata(
        run_id=1,
        message_id="",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id=reply_to_message_id,
        group_id="1",
        created_at=0.0,
        ttl=60.0,
        message_type=message_type,
    )

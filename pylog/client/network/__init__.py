"""pylog's clients over the network: a Kafka protocol client for the Producer, the
Consumer and GroupMember (:class:`NetworkClient`), its connections, and the group
coordinator calls over the wire (:class:`NetworkGroups`), and an :class:`AdminClient` for
cluster and topic administration (:mod:`pylog.client.network.admin`).

Uses :mod:`pylog.protocol` (framing, kio codecs), :mod:`pylog.records` and
:mod:`pylog.errors`; never the server or broker internals.
"""
from pylog.client.network.admin import AdminClient
from pylog.client.network.client import FetchHandle, NetworkClient, PartitionFetch, ProduceResult, parse_bootstrap
from pylog.client.network.connection import CLIENT_VERSIONS, BrokerConnection, PendingRequest
from pylog.client.network.groups import JoinResult, NetworkGroups

__all__ = ["AdminClient", "NetworkClient", "NetworkGroups", "JoinResult", "FetchHandle", "PartitionFetch", "ProduceResult",
           "BrokerConnection", "PendingRequest", "CLIENT_VERSIONS", "parse_bootstrap"]

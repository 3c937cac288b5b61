"""The Kafka APIs pylog speaks, each with the version range it implements.

The schemas come from ``kio`` (generated from Kafka's own JSON message definitions);
this table decides which of them pylog offers.  An API is listed only when every
version in its range is implemented by the server's handlers: ApiVersions advertises
exactly this table, and a request outside it is refused (see :mod:`pylog.protocol.codec`).

Transactions are not offered, so none of their APIs (AddPartitionsToTxn, EndTxn, ...)
is listed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, NamedTuple, Tuple, Type

from kio.index import load_request_schema, load_response_schema

__all__ = ["ApiSpec", "SUPPORTED", "API_NAMES", "request_class", "response_class", "is_flexible",
           "request_header_version", "response_header_version", "ApiKey"]


class ApiKey:
    """Kafka's API keys (the ones pylog implements, server or client side)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    DESCRIBE_ACLS = 29
    CREATE_ACLS = 30
    DELETE_ACLS = 31
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    DESCRIBE_LOG_DIRS = 35
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    ELECT_LEADERS = 43
    INCREMENTAL_ALTER_CONFIGS = 44
    ALTER_PARTITION_REASSIGNMENTS = 45
    LIST_PARTITION_REASSIGNMENTS = 46
    OFFSET_DELETE = 47
    DESCRIBE_USER_SCRAM_CREDENTIALS = 50
    ALTER_USER_SCRAM_CREDENTIALS = 51
    DESCRIBE_CLUSTER = 60


class ApiSpec(NamedTuple):
    name: str
    min_version: int
    max_version: int


#: api key -> (name, lowest, highest version implemented).
SUPPORTED: Dict[int, ApiSpec] = {
    ApiKey.PRODUCE: ApiSpec("Produce", 3, 11),
    ApiKey.FETCH: ApiSpec("Fetch", 4, 17),
    ApiKey.LIST_OFFSETS: ApiSpec("ListOffsets", 1, 6),
    ApiKey.METADATA: ApiSpec("Metadata", 0, 12),
    ApiKey.OFFSET_COMMIT: ApiSpec("OffsetCommit", 2, 8),
    ApiKey.OFFSET_FETCH: ApiSpec("OffsetFetch", 1, 8),
    ApiKey.FIND_COORDINATOR: ApiSpec("FindCoordinator", 0, 4),
    ApiKey.JOIN_GROUP: ApiSpec("JoinGroup", 0, 9),
    ApiKey.HEARTBEAT: ApiSpec("Heartbeat", 0, 4),
    ApiKey.LEAVE_GROUP: ApiSpec("LeaveGroup", 0, 5),
    ApiKey.SYNC_GROUP: ApiSpec("SyncGroup", 0, 5),
    ApiKey.DESCRIBE_GROUPS: ApiSpec("DescribeGroups", 0, 5),
    ApiKey.LIST_GROUPS: ApiSpec("ListGroups", 0, 4),
    ApiKey.SASL_HANDSHAKE: ApiSpec("SaslHandshake", 0, 1),
    ApiKey.API_VERSIONS: ApiSpec("ApiVersions", 0, 3),
    ApiKey.CREATE_TOPICS: ApiSpec("CreateTopics", 2, 7),
    ApiKey.DELETE_TOPICS: ApiSpec("DeleteTopics", 1, 6),
    ApiKey.DELETE_RECORDS: ApiSpec("DeleteRecords", 0, 2),
    ApiKey.INIT_PRODUCER_ID: ApiSpec("InitProducerId", 0, 4),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: ApiSpec("OffsetForLeaderEpoch", 2, 4),
    ApiKey.DESCRIBE_ACLS: ApiSpec("DescribeAcls", 1, 3),
    ApiKey.CREATE_ACLS: ApiSpec("CreateAcls", 1, 3),
    ApiKey.DELETE_ACLS: ApiSpec("DeleteAcls", 1, 3),
    ApiKey.DESCRIBE_CONFIGS: ApiSpec("DescribeConfigs", 1, 4),
    ApiKey.ALTER_CONFIGS: ApiSpec("AlterConfigs", 0, 2),
    ApiKey.DESCRIBE_LOG_DIRS: ApiSpec("DescribeLogDirs", 1, 4),
    ApiKey.SASL_AUTHENTICATE: ApiSpec("SaslAuthenticate", 0, 2),
    ApiKey.CREATE_PARTITIONS: ApiSpec("CreatePartitions", 0, 3),
    ApiKey.DELETE_GROUPS: ApiSpec("DeleteGroups", 0, 2),
    ApiKey.ELECT_LEADERS: ApiSpec("ElectLeaders", 0, 2),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: ApiSpec("IncrementalAlterConfigs", 0, 1),
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: ApiSpec("AlterPartitionReassignments", 0, 0),
    ApiKey.LIST_PARTITION_REASSIGNMENTS: ApiSpec("ListPartitionReassignments", 0, 0),
    ApiKey.OFFSET_DELETE: ApiSpec("OffsetDelete", 0, 0),
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: ApiSpec("DescribeUserScramCredentials", 0, 0),
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: ApiSpec("AlterUserScramCredentials", 0, 0),
    ApiKey.DESCRIBE_CLUSTER: ApiSpec("DescribeCluster", 0, 1),
}

#: api key -> name, for logs and metrics labels.
API_NAMES: Dict[int, str] = {k: v.name for k, v in SUPPORTED.items()}


@lru_cache(maxsize=None)
def request_class(api_key: int, version: int) -> Type:
    """kio's request dataclass of this API version."""
    return load_request_schema(api_key, version)


@lru_cache(maxsize=None)
def response_class(api_key: int, version: int) -> Type:
    """kio's response dataclass of this API version."""
    return load_response_schema(api_key, version)


@lru_cache(maxsize=None)
def is_flexible(api_key: int, version: int) -> bool:
    """Whether this version uses the compact, tagged-field ("flexible") encoding."""
    return bool(request_class(api_key, version).__flexible__)


def request_header_version(api_key: int, version: int) -> int:
    """2 for flexible versions, else 1 (pylog offers no API that uses header v0)."""
    return 2 if is_flexible(api_key, version) else 1


def response_header_version(api_key: int, version: int) -> int:
    """1 for flexible versions, else 0 — except ApiVersions, always 0 (a client must be
    able to read the answer before it knows what the broker supports)."""
    if api_key == ApiKey.API_VERSIONS:
        return 0
    return 1 if is_flexible(api_key, version) else 0


def supported_range(api_key: int) -> Tuple[int, int]:
    spec = SUPPORTED[api_key]
    return spec.min_version, spec.max_version

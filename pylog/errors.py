"""pylog's exception hierarchy.

One class per Kafka error that pylog can raise, carrying Kafka's error name and code so
that the network layer maps them 1:1.  Every class derives from :class:`PylogError`;
classes that are argument errors also derive from the matching Python builtin so that
``except ValueError`` keeps working for callers that do not know pylog.
"""
from __future__ import annotations

__all__ = [
    "PylogError",
    "OffsetOutOfRange",
    "CorruptRecordError",
    "InvalidRecord",
    "RecordTooLarge",
    "RecordBatchTooLarge",
    "InvalidTimestamp",
    "InvalidConfig",
    "InvalidArgument",
    "LogClosed",
    "StorageError",
    "UnsupportedCompressionType",
    "UnknownTopicOrPartition",
    "RequestTimedOut",
    "BufferExhausted",
    "NotLeaderOrFollower",
    "FencedLeaderEpoch",
    "InvalidTopic",
    "NotEnoughReplicas",
    "NotEnoughReplicasAfterAppend",
    "InvalidRequiredAcks",
    "TopicAlreadyExists",
    "InvalidPartitions",
    "InvalidReplicationFactor",
    "OutOfOrderSequence",
    "DuplicateSequence",
    "InvalidProducerEpoch",
    "UnknownProducerId",
    "BrokerClosed",
    "NoOffsetForPartition",
    "OffsetMetadataTooLarge",
    "NonEmptyGroup",
    "ProducerClosed",
    "ConsumerClosed",
    "IllegalState",
    "CoordinatorNotAvailable",
    "IllegalGeneration",
    "InconsistentGroupProtocol",
    "InvalidGroupId",
    "UnknownMemberId",
    "InvalidSessionTimeout",
    "RebalanceInProgress",
    "GroupIdNotFound",
    "CommitFailed",
    "error_for_code",
]


class PylogError(Exception):
    """Root of every error pylog raises on purpose."""

    #: Kafka's error code (protocol), -1 for UNKNOWN_SERVER_ERROR.
    code: int = -1
    #: Kafka's error name.
    kafka_name: str = "UNKNOWN_SERVER_ERROR"
    #: Whether a client may retry the same request.
    retriable: bool = False


class OffsetOutOfRange(PylogError, LookupError):
    """The requested offset is not between the log start and log end offset."""

    code = 1
    kafka_name = "OFFSET_OUT_OF_RANGE"


class CorruptRecordError(PylogError, ValueError):
    """A record batch failed validation (length, magic, CRC32C, record count, deltas)."""

    code = 2
    kafka_name = "CORRUPT_MESSAGE"
    retriable = True


class RecordTooLarge(PylogError, ValueError):
    """A record or batch is larger than max.message.bytes (or a hard limit)."""

    code = 10
    kafka_name = "MESSAGE_TOO_LARGE"


class RecordBatchTooLarge(RecordTooLarge):
    """A batch is larger than the segment can ever hold (segment.bytes)."""

    code = 18
    kafka_name = "RECORD_LIST_TOO_LARGE"


class InvalidTimestamp(PylogError, ValueError):
    """A timestamp is negative (other than -1, "none") or out of the accepted range."""

    code = 32
    kafka_name = "INVALID_TIMESTAMP"


class InvalidConfig(PylogError, ValueError):
    """A configuration name is unknown or its value is out of range."""

    code = 40
    kafka_name = "INVALID_CONFIG"


class InvalidArgument(PylogError, ValueError):
    """An argument to a pylog function is of the wrong type or out of range."""

    code = 42
    kafka_name = "INVALID_REQUEST"


class StorageError(PylogError, OSError):
    """The log directory could not be read or written (disk full, permissions, I/O)."""

    code = 56
    kafka_name = "KAFKA_STORAGE_ERROR"
    retriable = True


class LogClosed(StorageError):
    """The log was closed; no operation on it is possible any more."""


class UnsupportedCompressionType(PylogError, ValueError):
    """A batch uses a compression codec that is unknown or not installed."""

    code = 76
    kafka_name = "UNSUPPORTED_COMPRESSION_TYPE"


class InvalidRecord(CorruptRecordError):
    """A record is well-formed bytes but violates a rule (e.g. null key on compacted topic)."""

    code = 87
    kafka_name = "INVALID_RECORD"
    retriable = False  # the same record will be refused again


# ----------------------------------------------------------- broker and producer
class UnknownTopicOrPartition(PylogError, LookupError):
    """The topic does not exist, or the partition number is out of range for it."""

    code = 3
    kafka_name = "UNKNOWN_TOPIC_OR_PARTITION"


class NotLeaderOrFollower(PylogError):
    """This broker does not lead the partition (any more): refresh metadata and retry."""

    code = 6
    kafka_name = "NOT_LEADER_OR_FOLLOWER"
    retriable = True


class FencedLeaderEpoch(PylogError):
    """A request carried an older leader epoch than the replica knows."""

    code = 74
    kafka_name = "FENCED_LEADER_EPOCH"
    retriable = True


class RequestTimedOut(PylogError, TimeoutError):
    """A request did not complete within its timeout (e.g. delivery.timeout.ms)."""

    code = 7
    kafka_name = "REQUEST_TIMED_OUT"
    retriable = True


class BufferExhausted(RequestTimedOut):
    """Client side: a producer's send() waited max.block.ms for room in its buffer.memory
    and not enough was freed (Kafka's BufferExhaustedException, a TimeoutException)."""


class InvalidTopic(PylogError, ValueError):
    """A topic name breaks Kafka's rules, or the operation is not allowed on it."""

    code = 17
    kafka_name = "INVALID_TOPIC_EXCEPTION"


class NotEnoughReplicas(PylogError):
    """acks=all and the ISR is smaller than min.insync.replicas: nothing was written."""

    code = 19
    kafka_name = "NOT_ENOUGH_REPLICAS"
    retriable = True


class NotEnoughReplicasAfterAppend(PylogError):
    """acks=all: written by the leader, but the ISR shrank below min.insync.replicas."""

    code = 20
    kafka_name = "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
    retriable = True


class InvalidRequiredAcks(PylogError, ValueError):
    """acks is not 0, 1, -1 or "all"."""

    code = 21
    kafka_name = "INVALID_REQUIRED_ACKS"


class TopicAlreadyExists(PylogError, ValueError):
    """create_topic was asked for a name that exists (or collides after '.'/'_' swap)."""

    code = 36
    kafka_name = "TOPIC_ALREADY_EXISTS"


class InvalidPartitions(PylogError, ValueError):
    """The number of partitions is below 1 or above the limit."""

    code = 37
    kafka_name = "INVALID_PARTITIONS"


class InvalidReplicationFactor(PylogError, ValueError):
    """The replication factor is below 1 or larger than the number of brokers."""

    code = 38
    kafka_name = "INVALID_REPLICATION_FACTOR"


class OutOfOrderSequence(PylogError):
    """An idempotent producer's batch does not carry the next expected sequence number."""

    code = 45
    kafka_name = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class DuplicateSequence(PylogError):
    """An idempotent producer's batch was already written (the broker returns its offset)."""

    code = 46
    kafka_name = "DUPLICATE_SEQUENCE_NUMBER"


class InvalidProducerEpoch(PylogError):
    """The producer's epoch is older than the one the broker knows: it was fenced."""

    code = 47
    kafka_name = "INVALID_PRODUCER_EPOCH"


class UnknownProducerId(PylogError):
    """The broker has no state for this producer id (e.g. it expired)."""

    code = 59
    kafka_name = "UNKNOWN_PRODUCER_ID"


class BrokerClosed(PylogError):
    """The broker (or cluster) was closed; no request can be served any more."""


class OffsetMetadataTooLarge(PylogError, ValueError):
    """A committed offset's metadata string is longer than offset.metadata.max.bytes."""

    code = 12
    kafka_name = "OFFSET_METADATA_TOO_LARGE"


class NonEmptyGroup(PylogError):
    """The group cannot be deleted while it has members."""

    code = 68
    kafka_name = "NON_EMPTY_GROUP"


class NoOffsetForPartition(OffsetOutOfRange):
    """A consumer has no committed offset for a partition and auto.offset.reset is "none"."""


class ProducerClosed(PylogError):
    """send() or flush() was called after the producer was closed."""


class ConsumerClosed(PylogError):
    """A consumer method was called after close()."""


class IllegalState(PylogError):
    """The call is not valid in the object's current state (e.g. poll with no assignment)."""


# --- consumer groups (group coordinator, GroupService, GroupMember) ---------------------


class CoordinatorNotAvailable(PylogError):
    """The group coordinator is not running (closed service, or a group being deleted)."""

    code = 15
    kafka_name = "COORDINATOR_NOT_AVAILABLE"
    retriable = True


class IllegalGeneration(PylogError):
    """The request names a generation of the group that is not the current one."""

    code = 22
    kafka_name = "ILLEGAL_GENERATION"


class InconsistentGroupProtocol(PylogError, ValueError):
    """The member's protocol type or protocols match none the group's members support."""

    code = 23
    kafka_name = "INCONSISTENT_GROUP_PROTOCOL"


class InvalidGroupId(PylogError, ValueError):
    """The group id is not a string, or is empty where a group must be named."""

    code = 24
    kafka_name = "INVALID_GROUP_ID"


class UnknownMemberId(PylogError):
    """The member id is not a member of the group (never joined, left, or was evicted)."""

    code = 25
    kafka_name = "UNKNOWN_MEMBER_ID"


class InvalidSessionTimeout(PylogError, ValueError):
    """session.timeout.ms is outside group.min/max.session.timeout.ms of the broker."""

    code = 26
    kafka_name = "INVALID_SESSION_TIMEOUT"


class RebalanceInProgress(PylogError):
    """The group is rebalancing; the member must rejoin before this request can succeed."""

    code = 27
    kafka_name = "REBALANCE_IN_PROGRESS"


class GroupIdNotFound(PylogError, LookupError):
    """No group with this id exists on the coordinator."""

    code = 69
    kafka_name = "GROUP_ID_NOT_FOUND"


class CommitFailed(PylogError):
    """Client side: a commit failed because the member is no longer part of the group's
    current generation (it was evicted or the group rebalanced); its message names the
    coordinator's reason.  The partitions may already belong to another member."""

    code = -1
    kafka_name = "UNKNOWN_SERVER_ERROR"


# --- errors of the network protocol (server and network clients) ---------------------
class AuthorizationFailed(PylogError, PermissionError):
    """The principal may not perform the operation on the resource (an ACL denies it, or
    no ACL allows it while ``allow.everyone.if.no.acl.found`` is false)."""


class TopicAuthorizationFailed(AuthorizationFailed):
    code = 29
    kafka_name = "TOPIC_AUTHORIZATION_FAILED"


class GroupAuthorizationFailed(AuthorizationFailed):
    code = 30
    kafka_name = "GROUP_AUTHORIZATION_FAILED"


class ClusterAuthorizationFailed(AuthorizationFailed):
    code = 31
    kafka_name = "CLUSTER_AUTHORIZATION_FAILED"


class SecurityDisabled(PylogError):
    """An ACL request to a broker that has no authorizer (authorizer.class.name unset)."""

    code = 54
    kafka_name = "SECURITY_DISABLED"


__all__ += ["AuthorizationFailed", "TopicAuthorizationFailed", "GroupAuthorizationFailed",
            "ClusterAuthorizationFailed", "SecurityDisabled"]

__all__ += ["LeaderNotAvailable", "NetworkException", "CoordinatorLoadInProgress", "NotCoordinator",
            "UnsupportedVersion", "InvalidRequest", "UnknownLeaderEpoch", "MemberIdRequired",
            "GroupSubscribedToTopic", "UnknownTopicId", "TransactionsNotSupported",
            "InvalidReplicaAssignment"]


class LeaderNotAvailable(PylogError):
    """The partition has no leader right now (an election is under way)."""

    code = 5
    kafka_name = "LEADER_NOT_AVAILABLE"
    retriable = True


class NetworkException(PylogError, ConnectionError):
    """The connection to a broker failed or was closed before the answer came."""

    code = 13
    kafka_name = "NETWORK_EXCEPTION"
    retriable = True


class CoordinatorLoadInProgress(PylogError):
    """The group coordinator is still loading the group's offsets."""

    code = 14
    kafka_name = "COORDINATOR_LOAD_IN_PROGRESS"
    retriable = True


class NotCoordinator(PylogError):
    """This broker is not the coordinator of the group (ask FindCoordinator again)."""

    code = 16
    kafka_name = "NOT_COORDINATOR"
    retriable = True


class InvalidReplicaAssignment(PylogError, ValueError):
    """A manual replica assignment names brokers that do not exist or numbers its
    partitions wrongly."""

    code = 39
    kafka_name = "INVALID_REPLICA_ASSIGNMENT"


class UnsupportedVersion(PylogError):
    """The broker does not implement this API or this version of it."""

    code = 35
    kafka_name = "UNSUPPORTED_VERSION"


class InvalidRequest(PylogError, ValueError):
    """A protocol request that does not parse (bad sizes, truncated fields, bad strings,
    trailing bytes) or that breaks the protocol's rules."""

    code = 42
    kafka_name = "INVALID_REQUEST"


class UnknownLeaderEpoch(PylogError):
    """The client knows a newer leader epoch than this broker (its metadata is ahead)."""

    code = 75
    kafka_name = "UNKNOWN_LEADER_EPOCH"
    retriable = True


class MemberIdRequired(PylogError):
    """JoinGroup: rejoin with the member id this response carries (KIP-394)."""

    code = 79
    kafka_name = "MEMBER_ID_REQUIRED"


class GroupSubscribedToTopic(PylogError):
    """OffsetDelete: the group still consumes the topic, so its offsets must stay."""

    code = 86
    kafka_name = "GROUP_SUBSCRIBED_TO_TOPIC"


class UnknownTopicId(PylogError, LookupError):
    """No topic has this topic id (Fetch v13+, Metadata by id, DeleteTopics by id)."""

    code = 100
    kafka_name = "UNKNOWN_TOPIC_ID"
    retriable = True


class TransactionsNotSupported(InvalidRequest):
    """pylog does not offer Kafka transactions (transactional ids, read_committed
    markers); the request is refused as INVALID_REQUEST."""


# --- SASL authentication and SCRAM credentials (issue 13) ------------------------------
__all__ += ["SaslAuthenticationFailed", "UnsupportedSaslMechanism", "IllegalSaslState",
            "ResourceNotFound", "UnacceptableCredential"]


class SaslAuthenticationFailed(PylogError):
    """SASL authentication failed: wrong password, unknown user, malformed token.  The
    message never says which (an unknown user reads as a wrong password)."""

    code = 58
    kafka_name = "SASL_AUTHENTICATION_FAILED"


class UnsupportedSaslMechanism(PylogError, ValueError):
    """The client asked for a SASL mechanism the listener does not enable."""

    code = 33
    kafka_name = "UNSUPPORTED_SASL_MECHANISM"


class IllegalSaslState(PylogError):
    """A SASL request out of order (SaslAuthenticate before SaslHandshake, a second
    handshake, SASL on a listener without it)."""

    code = 34
    kafka_name = "ILLEGAL_SASL_STATE"


class ResourceNotFound(PylogError, LookupError):
    """The resource (a user's SCRAM credential) does not exist."""

    code = 91
    kafka_name = "RESOURCE_NOT_FOUND"


class UnacceptableCredential(PylogError, ValueError):
    """A SCRAM credential pylog refuses to store (too few iterations, empty salt or
    name, unknown mechanism)."""

    code = 93
    kafka_name = "UNACCEPTABLE_CREDENTIAL"


# --- cluster administration (controlled shutdown, elections, reassignments) ----------
__all__ += ["BrokerNotAvailable", "ElectionNotNeeded", "EligibleLeadersNotAvailable",
            "NoReassignmentInProgress", "PreferredLeaderNotAvailable"]


class BrokerNotAvailable(PylogError):
    """The broker is not registered (not running, or its session ended)."""

    code = 8
    kafka_name = "BROKER_NOT_AVAILABLE"


class PreferredLeaderNotAvailable(PylogError):
    """ElectLeaders (preferred): the partition's first replica is not alive, is shutting
    down or is not in the ISR, so it cannot lead now."""

    code = 80
    kafka_name = "PREFERRED_LEADER_NOT_AVAILABLE"
    retriable = True


class EligibleLeadersNotAvailable(PylogError):
    """No replica that may lead (alive, not shutting down, in the ISR) is available for
    the leader change the request needs."""

    code = 83
    kafka_name = "ELIGIBLE_LEADERS_NOT_AVAILABLE"
    retriable = True


class ElectionNotNeeded(PylogError):
    """ElectLeaders: the partition is already led by its preferred replica."""

    code = 84
    kafka_name = "ELECTION_NOT_NEEDED"


class NoReassignmentInProgress(PylogError):
    """A cancellation (AlterPartitionReassignments with no replicas) named a partition
    that is not being reassigned."""

    code = 85
    kafka_name = "NO_REASSIGNMENT_IN_PROGRESS"


# --- cluster metadata (MetadataStore; ZooKeeper's errors, client-side only) -----------
__all__ += ["BadVersion", "MetadataStoreUnavailable", "MetadataStoreNotAuthorized", "NoNode", "NodeExists",
            "SessionExpired", "ZooKeeperServerError"]


class NoNode(PylogError, LookupError):
    """A MetadataStore path does not exist (ZooKeeper's NONODE)."""


class NodeExists(PylogError):
    """A MetadataStore path already exists (ZooKeeper's NODEEXISTS)."""


class BadVersion(PylogError):
    """A compare-and-set write named a version the node no longer has (ZooKeeper's
    BADVERSION): someone else wrote it first; re-read and decide again."""


class SessionExpired(PylogError):
    """A MetadataStore session expired (or was closed): its ephemeral nodes are gone and
    it can neither heartbeat nor create ephemeral nodes (ZooKeeper's SESSIONEXPIRED)."""


class MetadataStoreNotAuthorized(PylogError, PermissionError):
    """ZooKeeper refused a call for the znode's ACL (NOAUTH) or refused the session's
    credentials (AUTH_FAILED): not retriable with the same identity."""


class MetadataStoreUnavailable(RequestTimedOut):
    """The metadata store (ZooKeeper) could not be reached before the call's deadline.

    Retriable.  A read changed nothing; a write whose connection was lost after it was sent
    may or may not have been applied (its message says so): re-read and decide again, as
    after a :class:`BadVersion`."""


class ZooKeeperServerError(PylogError, RuntimeError):
    """A private ZooKeeper server (``pylog.cluster.zkserver``) could not be found, started
    or stopped; the message says why (a missing install names the Debian package)."""


def _all_subclasses(cls: type) -> list[type]:
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def error_for_code(code: int) -> type[PylogError]:
    """The most general pylog exception class for a Kafka error code."""
    for cls in _all_subclasses(PylogError):
        if cls.code == code:
            return cls
    return PylogError

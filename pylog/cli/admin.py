"""`pylog topics ... --bootstrap-server HOST:PORT`: Kafka's kafka-topics.sh over the network.

The same subcommands as on a data directory (``pylog topics create|list|describe|
delete|alter``) through :class:`~pylog.client.network.admin.AdminClient`, with
kafka-topics.sh's flags and output:

- ``create T --partitions N --replication-factor R --config k=v [--replica-assignment
  1:2,2:3] [--if-not-exists]`` prints ``Created topic T.``;
- ``list [--exclude-internal]``;
- ``describe [T] [--under-replicated-partitions] [--unavailable-partitions]
  [--under-min-isr-partitions] [--at-min-isr-partitions] [--topics-with-overrides]``:
  Kafka's lines (``Topic: T<TAB>TopicId: ..<TAB>PartitionCount: ..<TAB>
  ReplicationFactor: ..<TAB>Configs: ..`` and one ``<TAB>Topic: T<TAB>Partition: p<TAB>
  Leader: l<TAB>Replicas: a,b,c<TAB>Isr: a,b`` per partition, ``Leader: none`` when it
  has none, ``Adding Replicas``/``Removing Replicas`` while it is being reassigned,
  ``Offline: x`` naming replicas on brokers that are down), and at the end of
  a partition's line the marks `` (offline)``, `` (under-replicated)`` and
  `` (under-min-isr)`` so an operator sees them at a glance.  With a partition filter
  only the partitions that match one of the filters are printed, without the topic
  lines (as kafka-topics.sh does);
- ``delete T [--if-exists]``; ``alter T --partitions N``.

Kafka's own form is accepted too: ``pylog topics --bootstrap-server B --create --topic T
...`` (:func:`kafka_topics_argv` turns ``--create``/``--list``/``--describe``/
``--delete``/``--alter`` into the subcommand), and ``--topic T`` wherever a topic name
goes.  ``describe --topic`` takes a regular expression, as kafka-topics.sh does.
"""
from __future__ import annotations

import argparse
import re
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["kafka_topics_argv", "run_topics_network", "format_partition", "format_topic_line",
           "parse_replica_assignment", "KAFKA_TOPICS_ACTIONS"]

#: kafka-topics.sh's action flags -> pylog's subcommands.
KAFKA_TOPICS_ACTIONS = {"--create": "create", "--list": "list", "--describe": "describe", "--delete": "delete",
                        "--alter": "alter"}


def kafka_topics_argv(argv: Sequence[str]) -> List[str]:
    """``topics ... --create ...`` -> ``topics create ...`` (Kafka's action flags as
    pylog's subcommands); any other command line is returned as it is."""
    argv = list(argv)
    if not argv or argv[0] != "topics" or len(argv) < 2 or not argv[1].startswith("-"):
        return argv
    actions = [a for a in argv[1:] if a in KAFKA_TOPICS_ACTIONS]
    if len(actions) != 1:
        return argv  # none (argparse says what is missing) or several (it refuses them)
    rest = [a for a in argv[1:] if a != actions[0]]
    return ["topics", KAFKA_TOPICS_ACTIONS[actions[0]], *rest]


def parse_replica_assignment(text: str) -> List[List[int]]:
    """kafka-topics.sh's ``--replica-assignment``: ``1:2:3,2:3:1`` (partition 0 on
    brokers 1, 2, 3; partition 1 on 2, 3, 1).  ValueError when it does not parse."""
    out = []
    for i, part in enumerate(text.split(",")):
        try:
            ids = [int(x) for x in part.split(":")]
        except ValueError:
            raise ValueError(f"--replica-assignment: partition {i} ({part!r}) is not broker ids joined by ':'") \
                from None
        if len(set(ids)) != len(ids):
            raise ValueError(f"--replica-assignment: partition {i} names a broker twice ({part!r})")
        out.append(ids)
    if len({len(r) for r in out}) != 1:
        raise ValueError("--replica-assignment: every partition needs the same number of replicas")
    return out


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids))


def format_topic_line(name: str, topic_id: str, partitions: int, replication_factor: int,
                      configs: Dict[str, Optional[str]]) -> str:
    """kafka-topics.sh's topic line."""
    cfg = ",".join(f"{k}={v}" for k, v in sorted(configs.items()))
    return (f"Topic: {name}\tTopicId: {topic_id}\tPartitionCount: {partitions}\t"
            f"ReplicationFactor: {replication_factor}\tConfigs: {cfg}")


def format_partition(topic: str, p: Any, min_isr: Optional[int] = None) -> str:
    """kafka-topics.sh's partition line of a
    :class:`~pylog.client.network.admin.TopicPartitionInfo`, plus pylog's marks."""
    line = (f"\tTopic: {topic}\tPartition: {p.partition}\tLeader: {p.leader if p.leader >= 0 else 'none'}\t"
            f"Replicas: {_ids(p.replicas)}\tIsr: {_ids(p.isr)}")
    if p.adding:
        line += f"\tAdding Replicas: {_ids(p.adding)}"
    if p.removing:
        line += f"\tRemoving Replicas: {_ids(p.removing)}"
    if p.offline_replicas:
        line += f"\tOffline: {_ids(p.offline_replicas)}"
    for mark, on in (("offline", p.offline), ("under-replicated", p.under_replicated),
                     ("under-min-isr", not p.offline and _under_min_isr(p, min_isr))):
        if on:
            line += f" ({mark})"
    return line


def _under_min_isr(p: Any, min_isr: Optional[int]) -> bool:
    """Kafka's rule: no leader, or an ISR smaller than min.insync.replicas."""
    return p.leader < 0 or p.offline or (min_isr is not None and len(p.isr) < min_isr)


def _min_isr(configs: Dict[str, Any]) -> Optional[int]:
    entry = configs.get("min.insync.replicas")
    value = getattr(entry, "value", entry)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _topic_name(args: argparse.Namespace, required: bool = True) -> Optional[str]:
    name = getattr(args, "name", None)
    given = getattr(args, "topic", None)
    if name and given and name != given:
        raise ValueError(f"two topic names given: {name!r} and --topic {given!r}")
    name = name or given
    if required and not name:
        raise ValueError("name the topic (TOPIC or --topic TOPIC)")
    return name


def run_topics_network(args: argparse.Namespace) -> int:
    """``pylog topics ACTION ... --bootstrap-server B`` (see the module docstring)."""
    from pylog.client.network.admin import AdminClient

    with AdminClient(args.bootstrap_server, request_timeout_ms=int(args.timeout_ms)) as admin:
        if args.action == "create":
            return _create(admin, args)
        if args.action == "delete":
            return _delete(admin, args)
        if args.action == "alter":
            return _alter(admin, args)
        if args.action == "list":
            for name in admin.list_topics(include_internal=args.internal and not args.exclude_internal):
                print(name)
            return 0
        return _describe(admin, args)


def _create(admin: Any, args: argparse.Namespace) -> int:
    from pylog.cli import _parse_config
    from pylog.errors import TopicAlreadyExists

    name = _topic_name(args)
    assignment = parse_replica_assignment(args.replica_assignment) if args.replica_assignment else None
    if assignment is not None and (args.partitions is not None or args.replication_factor is not None):
        raise ValueError("--replica-assignment replaces --partitions and --replication-factor")
    try:
        admin.create_topic(name, args.partitions, args.replication_factor, _parse_config(args.config),
                           replica_assignment=assignment)
    except TopicAlreadyExists:
        if args.if_not_exists:
            return 0
        raise
    print(f"Created topic {name}.")
    return 0


def _delete(admin: Any, args: argparse.Namespace) -> int:
    from pylog.errors import UnknownTopicOrPartition

    name = _topic_name(args)
    try:
        admin.delete_topic(name)
    except UnknownTopicOrPartition:
        if args.if_exists:
            return 0
        raise
    print(f"Deleted topic {name}.")
    return 0


def _alter(admin: Any, args: argparse.Namespace) -> int:
    name = _topic_name(args)
    if args.partitions is None:
        raise ValueError("alter needs --partitions N (topic configs: pylog has no kafka-configs command yet; "
                         "use IncrementalAlterConfigs)")
    admin.create_partitions(name, args.partitions)
    print(f"Topic {name} now has {args.partitions} partitions.")
    return 0


def _describe(admin: Any, args: argparse.Namespace) -> int:
    from pylog.client.network.admin import kafka_uuid
    from pylog.errors import InvalidTopic, UnknownTopicOrPartition

    name = _topic_name(args, required=False)
    include_internal = args.internal and not args.exclude_internal
    if name is None:
        topics = admin.describe_topics(include_internal=include_internal, include_reassignments=True)
    else:
        try:
            topics = admin.describe_topics([name], include_reassignments=True)
        except (UnknownTopicOrPartition, InvalidTopic):  # no such topic, or not a topic name
            # kafka-topics.sh's --topic is a regular expression over the topic names
            try:
                pattern = re.compile(name)
            except re.error:
                raise UnknownTopicOrPartition(f"topic {name!r} does not exist") from None
            matching = [t for t in admin.list_topics(include_internal=True) if pattern.fullmatch(t)]
            if not matching:
                raise UnknownTopicOrPartition(f"topic {name!r} does not exist") from None
            topics = admin.describe_topics(matching, include_reassignments=True)
    configs = admin.describe_configs(list(topics)) if topics else {}
    filters = (args.under_replicated_partitions, args.unavailable_partitions, args.under_min_isr_partitions,
               args.at_min_isr_partitions)
    show_topics = not any(filters)
    for tname, d in topics.items():
        cfg = configs.get(tname, {})
        overrides = {k: e.value for k, e in cfg.items() if not e.is_default and not e.is_sensitive}
        if args.topics_with_overrides:
            if overrides:
                print(format_topic_line(tname, kafka_uuid(d.topic_id), len(d.partitions), d.replication_factor,
                                        overrides))
            continue
        min_isr = _min_isr(cfg)
        if show_topics:
            print(format_topic_line(tname, kafka_uuid(d.topic_id), len(d.partitions), d.replication_factor,
                                    overrides))
        for p in d.partitions:
            if not show_topics and not (
                    (args.under_replicated_partitions and p.under_replicated)
                    or (args.unavailable_partitions and p.offline)
                    or (args.under_min_isr_partitions and _under_min_isr(p, min_isr))
                    or (args.at_min_isr_partitions and min_isr is not None and len(p.isr) == min_isr)):
                continue
            print(format_partition(tname, p, min_isr))
    return 0

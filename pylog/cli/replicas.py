"""`pylog leader-election` and `pylog reassign-partitions`: Kafka's kafka-leader-election.sh
and kafka-reassign-partitions.sh over the network.

Both talk to a cluster through :class:`~pylog.client.network.admin.AdminClient`
(``--bootstrap-server``) with Kafka's flags, file formats and messages.

**leader-election** ``--election-type preferred|unclean`` and one of
``--all-topic-partitions``, ``--topic T [--partition P]`` (every partition of T without
``--partition``) or ``--path-to-json-file F`` (``{"partitions": [{"topic": "t",
"partition": 0}]}``).  Prints the partitions elected, those whose preferred leader
already leads ("Valid replica already elected") and the failures; exit 1 if a
partition failed.

**reassign-partitions**, one action:

- ``--generate --topics-to-move-json-file F --broker-list 1,2,3,4``: F is
  ``{"version": 1, "topics": [{"topic": "t"}]}``; prints the current assignment of those
  topics and a proposed one over the listed brokers (the same partition count and
  replication factor, placed rack-aware with leaders and replicas spread evenly by
  :func:`pylog.cluster.placement.assign_replicas`; ``--disable-rack-aware`` ignores
  racks).  Nothing changes.
- ``--execute --reassignment-json-file F [--throttle BYTES_PER_S] [--additional]``: F is
  ``{"version": 1, "partitions": [{"topic": "t", "partition": 0, "replicas": [1, 2]}]}``
  (``log_dirs`` accepted, only "any").  Prints the current assignment (keep it to roll
  back), sets the throttle as Kafka's tool does — ``leader.replication.throttled.replicas``
  (the partitions' current replicas) and ``follower.replication.throttled.replicas`` (the
  replicas being added) on each topic, ``leader/follower.replication.throttled.rate`` on
  every broker involved — then sends AlterPartitionReassignments.  Refused while other
  reassignments are in progress unless ``--additional``.
- ``--verify --reassignment-json-file F [--preserve-throttles]``: per partition
  "completed", "still in progress", or neither (no reassignment, other replicas: exit 1);
  once none is in progress it removes the throttle (the broker rates on every broker, the
  topics' throttled replicas), as Kafka's tool does.
- ``--list``: the reassignments in progress.
- ``--cancel --reassignment-json-file F [--preserve-throttles]``: cancels the listed
  partitions' reassignments in progress (back to their original replicas) and removes
  the throttle.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["run_leader_election", "run_reassign_partitions", "add_leader_election_parser",
           "add_reassign_partitions_parser", "read_reassignment_file", "read_topics_file",
           "propose_assignment", "assignment_json"]

TopicPartition = Tuple[str, int]
LEADER_RATE = "leader.replication.throttled.rate"
FOLLOWER_RATE = "follower.replication.throttled.rate"
LEADER_REPLICAS = "leader.replication.throttled.replicas"
FOLLOWER_REPLICAS = "follower.replication.throttled.replicas"


# ====================================================================== files
def _load(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not JSON: {exc}") from None


def read_topics_file(path: str) -> List[str]:
    """kafka-reassign-partitions.sh's topics-to-move file: ``{"version": 1, "topics":
    [{"topic": "t"}, ...]}`` -> the names (ValueError when it is not that)."""
    data = _load(path, "topics-to-move file")
    topics = data.get("topics") if isinstance(data, dict) else None
    if not isinstance(topics, list) or not topics:
        raise ValueError(f'{path}: expected {{"version": 1, "topics": [{{"topic": "name"}}, ...]}}')
    names = []
    for t in topics:
        if not isinstance(t, dict) or not isinstance(t.get("topic"), str):
            raise ValueError(f'{path}: every entry of "topics" needs a "topic" name, got {t!r}')
        if t["topic"] not in names:
            names.append(t["topic"])
    return names


def read_reassignment_file(path: str) -> Dict[TopicPartition, List[int]]:
    """kafka-reassign-partitions.sh's reassignment file: ``{"version": 1, "partitions":
    [{"topic", "partition", "replicas", "log_dirs"?}]}`` -> ``{(topic, partition):
    replicas}`` in file order (ValueError on a malformed entry, a duplicate partition or
    replica, or a log dir other than "any": pylog has one log directory per broker)."""
    data = _load(path, "reassignment file")
    parts = data.get("partitions") if isinstance(data, dict) else None
    if not isinstance(parts, list) or not parts:
        raise ValueError(f'{path}: expected {{"version": 1, "partitions": [{{"topic": "t", "partition": 0, '
                         f'"replicas": [1, 2]}}, ...]}}')
    out: Dict[TopicPartition, List[int]] = {}
    for e in parts:
        ok = isinstance(e, dict) and isinstance(e.get("topic"), str) and isinstance(e.get("partition"), int) \
            and isinstance(e.get("replicas"), list) and all(isinstance(b, int) for b in e["replicas"])
        if not ok:
            raise ValueError(f"{path}: an entry needs topic (string), partition (int) and replicas (ints), "
                             f"got {e!r}")
        tp = (e["topic"], e["partition"])
        if tp in out:
            raise ValueError(f"{path}: partition {tp[0]}-{tp[1]} is listed twice")
        if not e["replicas"] or len(set(e["replicas"])) != len(e["replicas"]):
            raise ValueError(f"{path}: {tp[0]}-{tp[1]}: replicas must be distinct broker ids, got {e['replicas']}")
        dirs = e.get("log_dirs")
        if dirs is not None and (not isinstance(dirs, list) or len(dirs) != len(e["replicas"])
                                 or any(d != "any" for d in dirs)):
            raise ValueError(f'{path}: {tp[0]}-{tp[1]}: log_dirs must be "any" per replica (pylog keeps one log '
                             f"directory per broker), got {dirs!r}")
        out[tp] = list(e["replicas"])
    return out


def assignment_json(assignment: Mapping[TopicPartition, Sequence[int]]) -> str:
    """Kafka's reassignment JSON (compact, as its tool prints it), sorted."""
    parts = [{"topic": t, "partition": p, "replicas": list(r), "log_dirs": ["any"] * len(r)}
             for (t, p), r in sorted(assignment.items())]
    return json.dumps({"version": 1, "partitions": parts}, separators=(",", ":"))


def _tp(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"


def _ids(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids))


# ====================================================================== leader election
def add_leader_election_parser(sub: Any) -> None:
    le = sub.add_parser("leader-election", help="elect preferred (or unclean) leaders (kafka-leader-election.sh)",
                        description="Kafka's kafka-leader-election.sh: ElectLeaders through the controller.")
    le.add_argument("--bootstrap-server", required=True, metavar="HOST:PORT[,HOST:PORT...]")
    le.add_argument("--election-type", required=True, type=str.lower, choices=("preferred", "unclean"),
                    help="preferred: lead from the first replica; unclean: elect a leader out of the ISR "
                         "for partitions that have none")
    which = le.add_mutually_exclusive_group(required=True)
    which.add_argument("--all-topic-partitions", action="store_true", help="every partition of every topic")
    which.add_argument("--topic", default=None, help="this topic's partitions (or only --partition)")
    which.add_argument("--path-to-json-file", default=None, metavar="FILE",
                       help='{"partitions": [{"topic": "t", "partition": 0}, ...]}')
    le.add_argument("--partition", type=int, default=None, help="with --topic: only this partition")
    le.add_argument("--timeout-ms", type=int, default=30_000, help="per request (default 30000)")
    le.set_defaults(func=run_leader_election)


def _election_partitions(admin: Any, args: argparse.Namespace) -> Optional[List[TopicPartition]]:
    if args.all_topic_partitions:
        if args.partition is not None:
            raise ValueError("--partition goes with --topic")
        return None
    if args.topic is not None:
        if args.partition is not None:
            return [(args.topic, args.partition)]
        return [(args.topic, p.partition) for p in admin.describe_topic(args.topic).partitions]
    if args.partition is not None:
        raise ValueError("--partition goes with --topic")
    data = _load(args.path_to_json_file, "partitions file")
    parts = data.get("partitions") if isinstance(data, dict) else None
    if not isinstance(parts, list) or not parts or not all(
            isinstance(e, dict) and isinstance(e.get("topic"), str) and isinstance(e.get("partition"), int)
            for e in parts):
        raise ValueError(f'{args.path_to_json_file}: expected {{"partitions": [{{"topic": "t", "partition": 0}}, '
                         f'...]}}')
    out: List[TopicPartition] = []
    for e in parts:
        if (e["topic"], e["partition"]) in out:
            raise ValueError(f"{args.path_to_json_file}: {e['topic']}-{e['partition']} is listed twice")
        out.append((e["topic"], e["partition"]))
    return out


def run_leader_election(args: argparse.Namespace) -> int:
    """``pylog leader-election`` (see the module docstring)."""
    from pylog.client.network.admin import AdminClient
    from pylog.errors import ElectionNotNeeded

    with AdminClient(args.bootstrap_server, request_timeout_ms=args.timeout_ms) as admin:
        partitions = _election_partitions(admin, args)
        results = admin.elect_leaders(partitions, election_type=args.election_type)
    kind = args.election_type.upper()
    done = [tp for tp, e in results.items() if e is None]
    noop = [tp for tp, e in results.items() if isinstance(e, ElectionNotNeeded)]
    failed = {tp: e for tp, e in results.items() if e is not None and not isinstance(e, ElectionNotNeeded)}
    if done:
        print(f"Successfully completed leader election ({kind}) for partitions {', '.join(map(_tp, done))}")
    if noop:
        print(f"Valid replica already elected for partitions {', '.join(map(_tp, noop))}")
    for tp, e in failed.items():
        print(f"Error completing leader election ({kind}) for partition: {_tp(tp)}: {e}", file=sys.stderr)
    if failed:
        print(f"pylog leader-election: {len(failed)} replica(s) could not be elected", file=sys.stderr)
        return 1
    return 0


# ====================================================================== reassignment
def add_reassign_partitions_parser(sub: Any) -> None:
    rp = sub.add_parser("reassign-partitions", help="move partitions to other brokers (kafka-reassign-partitions.sh)",
                        description="Kafka's kafka-reassign-partitions.sh over the network: --generate a "
                                    "proposal, --execute it (optionally throttled), --verify until it is "
                                    "complete (which removes the throttle), --list, --cancel.")
    rp.add_argument("--bootstrap-server", required=True, metavar="HOST:PORT[,HOST:PORT...]")
    action = rp.add_mutually_exclusive_group(required=True)
    for flag in ("--generate", "--execute", "--verify", "--list", "--cancel"):
        action.add_argument(flag, action="store_true")
    rp.add_argument("--topics-to-move-json-file", default=None, metavar="FILE",
                    help='--generate: {"version": 1, "topics": [{"topic": "t"}, ...]}')
    rp.add_argument("--broker-list", default=None, metavar="1,2,3",
                    help="--generate: the brokers to spread the topics over")
    rp.add_argument("--disable-rack-aware", action="store_true", help="--generate: ignore the brokers' racks")
    rp.add_argument("--reassignment-json-file", default=None, metavar="FILE",
                    help='--execute/--verify/--cancel: {"version": 1, "partitions": [{"topic": "t", '
                         '"partition": 0, "replicas": [1, 2]}, ...]}')
    rp.add_argument("--throttle", type=int, default=None, metavar="BYTES_PER_S",
                    help="--execute: limit the replication of the moving replicas to this many bytes/s per "
                         "broker (removed by --verify once complete)")
    rp.add_argument("--additional", action="store_true",
                    help="--execute: also while other reassignments are in progress")
    rp.add_argument("--preserve-throttles", action="store_true",
                    help="--verify/--cancel: leave the throttle in place")
    rp.add_argument("--timeout-ms", type=int, default=30_000, help="per request (default 30000)")
    rp.set_defaults(func=run_reassign_partitions)


def run_reassign_partitions(args: argparse.Namespace) -> int:
    """``pylog reassign-partitions`` (see the module docstring)."""
    from pylog.client.network.admin import AdminClient

    need_file = args.execute or args.verify or args.cancel
    if need_file and not args.reassignment_json_file:
        raise ValueError("--execute, --verify and --cancel need --reassignment-json-file")
    if args.generate and not (args.topics_to_move_json_file and args.broker_list):
        raise ValueError("--generate needs --topics-to-move-json-file and --broker-list")
    if args.throttle is not None and (not args.execute or args.throttle < 1):
        raise ValueError("--throttle goes with --execute and is a positive number of bytes/s")
    with AdminClient(args.bootstrap_server, request_timeout_ms=args.timeout_ms) as admin:
        if args.generate:
            return _generate(admin, args)
        if args.list:
            return _list(admin)
        target = read_reassignment_file(args.reassignment_json_file)
        if args.execute:
            return _execute(admin, target, args)
        if args.verify:
            return _verify(admin, target, args)
        return _cancel(admin, target, args)


def _current(admin: Any, topics: Sequence[str]) -> Dict[TopicPartition, List[int]]:
    described = admin.describe_topics(list(dict.fromkeys(topics)))
    return {(t, p.partition): list(p.replicas) for t, d in described.items() for p in d.partitions}


def propose_assignment(current: Mapping[TopicPartition, Sequence[int]], brokers: Mapping[int, Optional[str]]
                       ) -> Dict[TopicPartition, List[int]]:
    """A new assignment of every partition in ``current`` over ``brokers`` (id -> rack):
    per topic the same partition count and replication factor, placed by
    :func:`~pylog.cluster.placement.assign_replicas` (rack-aware; leaders and replicas
    even), each topic's leaders starting where the previous topic's stopped."""
    from pylog.cluster.placement import assign_replicas

    topics: Dict[str, List[int]] = {}
    for (t, p) in sorted(current):
        topics.setdefault(t, []).append(p)
    out: Dict[TopicPartition, List[int]] = {}
    start = 0
    for t, parts in topics.items():
        rf = len(current[(t, parts[0])])
        placed = assign_replicas(dict(brokers), len(parts), rf, start=start % len(brokers))
        for p, replicas in zip(sorted(parts), placed, strict=True):
            out[(t, p)] = list(replicas)
        start += len(parts)
    return out


def _generate(admin: Any, args: argparse.Namespace) -> int:
    names = read_topics_file(args.topics_to_move_json_file)
    try:
        wanted = [int(x) for x in args.broker_list.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--broker-list must be broker ids joined by ',', got {args.broker_list!r}") from None
    if not wanted or len(set(wanted)) != len(wanted):
        raise ValueError(f"--broker-list must name distinct brokers, got {args.broker_list!r}")
    live = {b.node_id: b.rack for b in admin.describe_cluster().brokers}
    missing = [b for b in wanted if b not in live]
    if missing:
        raise ValueError(f"--broker-list names brokers that are not live: {missing} (live: {sorted(live)})")
    brokers = {b: None if args.disable_rack_aware else live[b] for b in wanted}
    current = _current(admin, names)
    proposed = propose_assignment(current, brokers)
    print("Current partition replica assignment")
    print(assignment_json(current))
    print()
    print("Proposed partition reassignment configuration")
    print(assignment_json(proposed))
    return 0


def _list(admin: Any) -> int:
    moving = admin.list_partition_reassignments()
    if not moving:
        print("No partition reassignments found.")
        return 0
    print("Current partition reassignments:")
    for tp, r in moving.items():
        print(f"{_tp(tp)}: replicas: {_ids(r.replicas)}. adding: {_ids(r.adding)}. removing: {_ids(r.removing)}.")
    return 0


def _throttled_replicas(pairs: Sequence[Tuple[int, int]]) -> str:
    return ",".join(f"{p}:{b}" for p, b in sorted(set(pairs)))


def _execute(admin: Any, target: Dict[TopicPartition, List[int]], args: argparse.Namespace) -> int:
    current = _current(admin, [t for t, _ in target])
    unknown = [tp for tp in target if tp not in current]
    if unknown:
        raise ValueError(f"the reassignment names partitions that do not exist: {', '.join(map(_tp, unknown))}")
    if not args.additional:
        moving = admin.list_partition_reassignments()
        if moving:
            raise ValueError("Cannot execute because there is an existing partition assignment "
                             f"({', '.join(map(_tp, moving))}).  Use --additional to override this and create a "
                             "new partition assignment in addition to the existing one.")
    print("Current partition replica assignment")
    print()
    print(assignment_json({tp: current[tp] for tp in target}))
    print()
    print("Save this to use as the --reassignment-json-file option during rollback")
    if args.throttle is not None:
        _set_throttle(admin, target, current, args.throttle)
    results = admin.alter_partition_reassignments(dict(target))
    failed = {tp: e for tp, e in results.items() if e is not None}
    if failed:
        print("Error reassigning partition(s):", file=sys.stderr)
        for tp, e in failed.items():
            print(f"{_tp(tp)}: {e}", file=sys.stderr)
        started = [tp for tp, e in results.items() if e is None]
        if started:
            print(f"Successfully started partition reassignments for {','.join(map(_tp, started))}")
        return 1
    print(f"Successfully started partition reassignments for {','.join(map(_tp, results))}")
    return 0


def _set_throttle(admin: Any, target: Mapping[TopicPartition, List[int]],
                  current: Mapping[TopicPartition, List[int]], rate: int) -> None:
    """Kafka's tool's throttle: on each topic, the current replicas of its moving
    partitions as leader-throttled and the added ones as follower-throttled; the rate on
    every broker that holds or receives a moving replica."""
    leader: Dict[str, List[Tuple[int, int]]] = {}
    follower: Dict[str, List[Tuple[int, int]]] = {}
    brokers = set()
    for (t, p), replicas in target.items():
        if list(replicas) == list(current[(t, p)]):
            continue
        leader.setdefault(t, []).extend((p, b) for b in current[(t, p)])
        follower.setdefault(t, []).extend((p, b) for b in replicas if b not in current[(t, p)])
        brokers.update(current[(t, p)])
        brokers.update(replicas)
    for t in sorted(set(leader) | set(follower)):
        changes = {LEADER_REPLICAS: _throttled_replicas(leader.get(t, []))}
        if follower.get(t):
            changes[FOLLOWER_REPLICAS] = _throttled_replicas(follower[t])
        admin.incremental_alter_configs(t, changes)
    for b in sorted(brokers):
        admin.incremental_alter_configs(str(b), {LEADER_RATE: rate, FOLLOWER_RATE: rate}, resource_type="broker")
    print("Warning: You must run --verify periodically, until the reassignment completes, to ensure the throttle "
          "is removed.")
    print(f"The inter-broker throttle limit was set to {rate} B/s")


def _clear_throttle(admin: Any, topics: Sequence[str]) -> None:
    """Kafka's tool's clean-up: the rates on every live broker, the throttled replicas of
    the topics."""
    from pylog.errors import UnknownTopicOrPartition

    brokers = [b.node_id for b in admin.describe_cluster().brokers]
    for b in brokers:
        admin.incremental_alter_configs(str(b), {LEADER_RATE: None, FOLLOWER_RATE: None}, resource_type="broker")
    print(f"Clearing broker-level throttles on brokers {_ids(brokers)}")
    for t in sorted(set(topics)):
        try:
            admin.incremental_alter_configs(t, {LEADER_REPLICAS: None, FOLLOWER_REPLICAS: None})
        except UnknownTopicOrPartition:
            continue
        print(f"Clearing topic-level throttles on topic {t}")


def _verify(admin: Any, target: Dict[TopicPartition, List[int]], args: argparse.Namespace) -> int:
    moving = admin.list_partition_reassignments(list(target))
    current = _current(admin, [t for t, _ in target])
    print("Status of partition reassignment:")
    ongoing = wrong = 0
    for tp, replicas in target.items():
        if tp in moving:
            ongoing += 1
            print(f"Reassignment of partition {_tp(tp)} is still in progress.")
        elif current.get(tp) == list(replicas):
            print(f"Reassignment of partition {_tp(tp)} is completed.")
        else:
            wrong += 1
            now = _ids(current[tp]) if tp in current else "(no such partition)"
            print(f"There is no active reassignment of partition {_tp(tp)}, but replica set is {now} rather than "
                  f"{_ids(replicas)}.")
    if not ongoing and not args.preserve_throttles:
        print()
        _clear_throttle(admin, [t for t, _ in target])
    return 1 if wrong else 0


def _cancel(admin: Any, target: Dict[TopicPartition, List[int]], args: argparse.Namespace) -> int:
    moving = admin.list_partition_reassignments(list(target))
    active = [tp for tp in target if tp in moving]
    if not active:
        print("None of the specified partition moves are active.")
    else:
        results = admin.alter_partition_reassignments({tp: None for tp in active})
        failed = {tp: e for tp, e in results.items() if e is not None}
        done = [tp for tp, e in results.items() if e is None]
        if done:
            print(f"Successfully cancelled partition reassignments for: {','.join(map(_tp, done))}")
        for tp, e in failed.items():
            print(f"Error cancelling the reassignment of {_tp(tp)}: {e}", file=sys.stderr)
        if failed:
            return 1
    if not args.preserve_throttles:
        _clear_throttle(admin, [t for t, _ in target])
    return 0

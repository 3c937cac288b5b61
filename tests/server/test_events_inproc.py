"""Several servers in one process (tests/server/inproc_cluster.py): each server's
EventLog keeps the events its own broker logged, so the controller's shows a stopped
broker leaving and the election that follows, and the other brokers' do not."""
from __future__ import annotations

from pylog.client.network.admin import AdminClient
from tests.server.inproc_cluster import InProcessCluster, wait_until


def _events(broker, kind: str, prefix: str):
    return [e for e in broker.server.events.events() if e["kind"] == kind and e["message"].startswith(prefix)]


def test_each_server_keeps_its_own_brokers_events(tmp_path):
    with InProcessCluster(tmp_path) as c:
        for b in (1, 2, 3):
            c.start(b)
        with AdminClient(c.bootstrap) as admin:
            admin.create_topic("ev", 3, 3)
            d = admin.wait_for_topic("ev")
            ctl = admin.describe_cluster().controller_id
        assert ctl in (1, 2, 3)
        x = next(b for b in (3, 2, 1) if b != ctl)
        led = [p.partition for p in d.partitions if p.leader == x]
        assert led, "placement gives every broker a leadership"
        c.brokers[x].stop()
        controller = c.brokers[ctl]
        gone = wait_until(lambda: _events(controller, "broker_leave", f"broker {x} "),
                          f"the controller's broker_leave event of broker {x}")
        assert gone[0]["broker"] == ctl
        elected = wait_until(lambda: _events(controller, "election_clean", f"ev-{led[0]}: leader {x} -> "),
                             f"the controller's election event of ev-{led[0]}")
        assert elected[0]["broker"] == ctl and elected[0]["seq"] > gone[0]["seq"]
        for b in c.running():
            kept = b.server.events.events()
            assert all(e["broker"] == b.broker_id for e in kept), (b.broker_id, kept)
            if b.broker_id != ctl:
                assert not _events(b, "broker_leave", ""), b.broker_id
                assert not _events(b, "election_clean", ""), b.broker_id

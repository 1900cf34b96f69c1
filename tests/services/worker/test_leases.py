"""KV leases of coordinator replicas on a worker: equal shares, per-replica use, expiry frees only the
dead replica's requests (and those nobody owns)."""

from __future__ import annotations

import pytest

from services.worker.leases import Leases, owner_tag


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_shares_split_the_cache_and_return_when_a_replica_expires() -> None:
    clock = Clock()
    leases = Leases(clock, expiry_s=2.0)
    # Before any Register is answered, the first replica may not be told more than the whole cache.
    assert leases.share_tokens(1000, "a:1") == 1000
    leases.opened("a:1", "r0.aaaa")
    # A second replica's share counts itself before its Register is answered: never a share too large.
    assert leases.share_tokens(1000, "b:1") == 500
    leases.opened("b:1", "r1.bbbb")
    leases.opened("c:1", "r2.cccc")
    shares = [leases.share_tokens(1000, a) for a in ("a:1", "b:1", "c:1")]
    assert shares == [333, 333, 333] and sum(shares) <= 1000

    clock.now_s += 1.5
    leases.renewed("a:1")
    leases.renewed("c:1")
    clock.now_s += 1.0  # b has not answered for 2.5 s > 2 s
    assert leases.expire() == []  # but nobody tried it and failed: a stalled worker frees nothing
    leases.failed("b:1")
    gone = leases.expire()
    assert [s.coordinator_id for s in gone] == ["r1.bbbb"]
    assert [leases.share_tokens(1000, a) for a in ("a:1", "c:1")] == [500, 500]
    assert leases.expire() == []
    assert leases.renewed("a:1") and not leases.renewed("b:1")  # b must register again


def test_requests_belong_to_the_replica_named_in_their_id() -> None:
    leases = Leases(Clock())
    leases.opened("a:1", "r0.aaaa")
    leases.opened("b:1", "r1.bbbb")
    held = {"cmpl-r0.aaaa-1": 7, "cmpl-r0.aaaa-2.1": 5, "chat-r1.bbbb-1": 11, "stray": 3}
    assert owner_tag("r0.aaaa") == "-r0.aaaa-"
    assert leases.used_by("r0.aaaa", held) == 12
    assert leases.used_by("r1.bbbb", held) == 11
    assert sorted(leases.owned("r1.bbbb", held)) == ["chat-r1.bbbb-1"]
    # The dead replica's requests and those no living replica owns; never the living one's.
    assert sorted(leases.orphans("r0.aaaa", held)) == ["cmpl-r0.aaaa-1", "cmpl-r0.aaaa-2.1", "stray"]


def test_a_restarted_replica_is_told_apart_by_its_new_id() -> None:
    leases = Leases(Clock())
    assert leases.opened("a:1", "r0.aaaa") is None
    assert leases.opened("a:1", "r0.aaaa") is None  # registering again after a blip: same session
    assert leases.opened("a:1", "r0.ffff") == "r0.aaaa"
    assert leases.coordinator_id("a:1") == "r0.ffff"
    # With one coordinator every request it did not make is an orphan (as before replicas existed).
    assert leases.orphans("r0.aaaa", ["x-r0.aaaa-1", "old"]) == ["x-r0.aaaa-1", "old"]


def test_expiry_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expiry_s"):
        Leases(Clock(), expiry_s=0)


def test_a_slow_heartbeat_period_is_never_expired_between_two_beats() -> None:
    clock = Clock()
    leases = Leases(clock, expiry_s=2.0)
    leases.opened("slow:1", "r0.aaaa", interval_s=3.0)  # this replica asked for a beat every 3 s
    leases.failed("slow:1")
    clock.now_s += 3.5
    assert leases.expire() == []
    clock.now_s += 9.0  # 12.5 s of silence > 4 beats
    assert [s.address for s in leases.expire()] == ["slow:1"]


def test_seen_lists_the_replicas_that_answered_and_drops_a_failing_one_at_once() -> None:
    clock = Clock()
    leases = Leases(clock, expiry_s=2.0)
    leases.opened("a:1", "r0.aaaa")
    leases.opened("b:1", "r1.bbbb")
    assert leases.seen() == {"r0.aaaa": "a:1", "r1.bbbb": "b:1"}
    # A failed call is enough to stop telling the other replicas that r0 lives (its lease still holds).
    leases.failed("a:1")
    assert leases.seen() == {"r1.bbbb": "b:1"}
    assert leases.coordinator_id("a:1") == "r0.aaaa"
    leases.renewed("a:1")
    assert leases.seen() == {"r0.aaaa": "a:1", "r1.bbbb": "b:1"}

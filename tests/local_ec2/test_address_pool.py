"""The loopback address pool on its own: no Docker, no moto. Two local EC2s on one host (the
test suite runs several at once) must never hand out the same address."""

import multiprocessing
import socket

from .machines import AddressPool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_pools_on_one_host_never_hand_out_the_same_address(tmp_path):
    ports = [free_port()]
    a = AddressPool(ports, claims=str(tmp_path))
    b = AddressPool(ports, claims=str(tmp_path))
    first = [a.allocate(), a.allocate()]
    second = [b.allocate(), b.allocate()]
    assert first == ["127.0.0.2", "127.0.0.3"]
    assert second == ["127.0.0.4", "127.0.0.5"]
    a.release("127.0.0.2")
    assert b.allocate() == "127.0.0.2"  # released: the lowest free again, for whoever asks
    a.clear()  # a reset gives back every claim
    assert b.allocate() == "127.0.0.3"


def hold_and_die(ports, claims, ready):
    pool = AddressPool(ports, claims=claims)
    ready.put(pool.allocate())
    # exits without releasing: a killed server's claims go with its process


def test_a_dead_servers_claims_are_free_again(tmp_path):
    ports = [free_port()]
    ready = multiprocessing.Queue()
    p = multiprocessing.Process(target=hold_and_die, args=(ports, str(tmp_path), ready))
    p.start()
    assert ready.get(timeout=30) == "127.0.0.2"
    p.join(30)
    assert AddressPool(ports, claims=str(tmp_path)).allocate() == "127.0.0.2"


def test_an_address_whose_port_something_else_holds_is_skipped(tmp_path):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.2", port))
        holder.listen()
        pool = AddressPool([port], claims=str(tmp_path))
        assert pool.allocate() == "127.0.0.3"
    assert AddressPool([port], claims=str(tmp_path)).allocate() == "127.0.0.2"  # the skip left no claim

"""The Horovod hostname trap: a Gloo job across hosts whose host name resolves to a loopback
address (Debian's stock /etc/hosts maps it to 127.0.1.1) aborts in hvd.init() with
gloo::IoException and no word about why. The package checks first and says so."""

import pytest

from tf_largebatch import distributed

pytestmark = pytest.mark.unit

# What horovodrun sets on a worker of a job across 2 real hosts, and on one of
# `-H localhost:2,127.0.0.1:2` (two "hosts" on one machine), as printed by `env` under each.
ACROSS_HOSTS = {"HOROVOD_CROSS_SIZE": "2", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "198.18.0.1",
                "HOROVOD_GLOO_IFACE": "eth0", "HOROVOD_HOSTNAME": "node1"}
ONE_MACHINE = {"HOROVOD_CROSS_SIZE": "2", "HOROVOD_GLOO_RENDEZVOUS_ADDR": "127.0.0.1",
               "HOROVOD_GLOO_IFACE": "lo", "HOROVOD_HOSTNAME": "127.0.0.1"}


def resolving_to(address):
    def resolve(name):
        if address is None:
            raise OSError(f"{name}: Name or service not known")
        return address
    return resolve


def test_a_job_across_hosts_with_a_loopback_host_name_is_refused_naming_the_fix():
    problem = distributed.loopback_hostname_problem(ACROSS_HOSTS, "node1",
                                                    resolving_to("127.0.1.1"))
    assert "'node1' resolves to 127.0.1.1, a loopback address" in problem
    assert "spans 2 hosts (rendezvous at 198.18.0.1, interface eth0)" in problem
    assert "/etc/hosts" in problem and "127.0.1.1 line" in problem


def test_a_host_name_that_does_not_resolve_is_refused_too():
    problem = distributed.loopback_hostname_problem(ACROSS_HOSTS, "node1", resolving_to(None))
    assert "'node1' does not resolve to an address" in problem


@pytest.mark.parametrize("env, address", [
    (ACROSS_HOSTS, "198.18.0.2"),  # the name resolves to the host's address on the network
    (ONE_MACHINE, "127.0.0.1"),  # "hosts" on one machine: loopback is right
    ({**ACROSS_HOSTS, "HOROVOD_CROSS_SIZE": "1"}, "127.0.1.1"),  # one host
    ({}, "127.0.1.1"),  # not started by horovodrun's Gloo launcher (a plain python, mpirun)
])
def test_jobs_that_work_pass(env, address):
    assert distributed.loopback_hostname_problem(env, "node1", resolving_to(address)) is None


def test_the_suggested_line_names_the_address_of_the_interface_horovodrun_chose():
    assert distributed.interface_address("lo") == "127.0.0.1"
    problem = distributed.loopback_hostname_problem({**ACROSS_HOSTS, "HOROVOD_GLOO_IFACE": "lo"},
                                                    "node1", resolving_to("127.0.1.1"))
    assert "'127.0.0.1 node1'" in problem
    assert distributed.interface_address("no-such-interface0") is None


@pytest.mark.parametrize("variable", distributed.LAUNCHER_VARIABLES)
def test_launchers_are_recognised_by_the_variables_they_set(variable):
    assert distributed.launched_by({variable: "4"}) == variable
    assert distributed.launched_by({"PATH": "/usr/bin"}) is None

import subprocess

import pytest

from .harness import LocalEc2, containers


@pytest.fixture(scope="session")
def local_ec2():
    ec2 = LocalEc2.start()
    try:
        yield ec2
    finally:
        ec2.stop(sweep=False)
        left = containers(str(ec2.pid))
        ec2.stop()
        assert left == [], f"containers outlived the local EC2: {left}"


@pytest.fixture(autouse=True)
def fresh(request):
    """Every test starts from a reset server and leaves no container behind."""
    if "local_ec2" not in request.fixturenames:
        yield
        return
    ec2 = request.getfixturevalue("local_ec2")
    ec2.reset()
    yield
    ec2.reset()


@pytest.fixture(scope="session")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("key")
    path = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path

"""s3/loader.py answers what botocore's own loader answers, from the same search paths,
without walking every service directory before the first client (issue 16, point 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.loaders
import botocore.session
import pytest

from s3fuse.s3 import loader


def client_with(data_loader: Any) -> Any:
    session = botocore.session.Session()
    session.register_component("data_loader", data_loader)
    return session.create_client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )


def test_membership_and_listing_are_botocores() -> None:
    quick, plain = loader.create_loader(), botocore.loaders.create_loader()
    known = quick.list_available_services("service-2")
    assert "s3" in known and "sts" in known
    for name in ("no-such-service", "", "../s3", ".", "s3/2006-03-01", 3):
        assert name not in known, name
    everything = plain.list_available_services("service-2")
    assert list(known) == everything
    assert len(known) == len(everything) and known[0] == everything[0]
    assert list(known[:3]) == everything[:3]


def test_the_model_is_botocores() -> None:
    quick, plain = loader.create_loader(), botocore.loaders.create_loader()
    assert quick.load_service_model("s3", "service-2") == plain.load_service_model(
        "s3", "service-2"
    )
    assert quick.load_service_model("s3", "endpoint-rule-set-1") == plain.load_service_model(
        "s3", "endpoint-rule-set-1"
    )


def test_an_unknown_service_is_refused_with_the_list() -> None:
    with pytest.raises(botocore.exceptions.UnknownServiceError) as e:
        loader.create_loader().load_service_model("no-such-service", "service-2")
    assert "no-such-service" in str(e.value) and ", s3," in str(e.value)


def test_data_path_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model in data_path / AWS_DATA_PATH (several, ~ and $VARS expanded) is found,
    and wins over botocore's own, as with botocore's loader."""
    own = tmp_path / "one" / "myservice" / "2020-01-01"
    own.mkdir(parents=True)
    (own / "service-2.json").write_text(json.dumps({"metadata": {"mine": True}}))
    s3 = tmp_path / "two" / "s3" / "2006-03-01"
    s3.mkdir(parents=True)
    (s3 / "service-2.json").write_text(json.dumps({"metadata": {"patched": True}}))
    monkeypatch.setenv("S3FUSE_TEST_DATA", str(tmp_path))
    quick = loader.create_loader(os.pathsep.join(["$S3FUSE_TEST_DATA/one", str(tmp_path / "two")]))
    assert "myservice" in quick.list_available_services("service-2")
    assert "myservice" in list(quick.list_available_services("service-2"))
    assert quick.load_service_model("myservice", "service-2")["metadata"] == {"mine": True}
    assert quick.load_service_model("s3", "service-2")["metadata"] == {"patched": True}


def test_a_client_is_made_without_the_directory_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    listdir = os.listdir

    def counted(path: Any = ".") -> list[str]:
        calls.append(str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counted)
    client_with(botocore.loaders.create_loader())
    walked = len(calls)
    calls.clear()
    client = client_with(loader.create_loader())
    assert client.meta.service_model.service_name == "s3"
    assert walked > 100, f"botocore's own loader listed only {walked} directories"
    assert len(calls) <= 10, calls

"""botocore's loader of its JSON data (service models, endpoint rules), without the
directory walk that every first client of a process pays.

Before it loads a model, botocore's Loader checks that the service is "known" by listing
every service directory of its data path and every API version in each (~900
``listdir`` calls and ~2,700 ``stat`` calls for botocore 1.3x). That took 70-90 ms of each
mount's start-up on this project's VM, more than decoding the S3 model itself. Whether
*one* service is known is answered by looking at that service's own directory, which
botocore's ``list_api_versions`` does anyway right after; the full list is built only if
somebody iterates it (the "unknown service" message, ``get_available_services``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import overload

import botocore.exceptions
import botocore.loaders


class _KnownServices(Sequence[str]):
    """The services with data of one type: membership by a look at the one service's
    directory, everything else from botocore's own full listing."""

    def __init__(self, loader: QuickLoader, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            return False
        try:
            return bool(self._loader.list_api_versions(name, self._type_name))
        except botocore.exceptions.DataNotFoundError:
            return False

    @functools.cached_property
    def _all(self) -> list[str]:
        return self._loader.all_services(self._type_name)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all[index]

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all)


class QuickLoader(botocore.loaders.Loader):  # type: ignore[misc]
    def list_available_services(self, type_name: str) -> Sequence[str]:
        return _KnownServices(self, type_name)

    def all_services(self, type_name: str) -> list[str]:
        listed: list[str] = super().list_available_services(type_name)
        return listed


def create_loader(search_path_string: str | None = None) -> QuickLoader:
    """botocore.loaders.create_loader with the quick membership check, over the search
    paths botocore's own function makes (``data_path`` / AWS_DATA_PATH first, then
    ~/.aws/models, then botocore's own data)."""
    paths = botocore.loaders.create_loader(search_path_string).search_paths
    return QuickLoader(extra_search_paths=list(paths), include_default_search_paths=False)

"""A stream of writes, closes and renames into a mount, for the SIGKILL test. Prints a
line only after the operation returned 0, so the test knows what was promised."""

import hashlib
import os
import random
import sys


def content(tag: str, i: int) -> bytes:
    seed = hashlib.sha256(f"{tag}-{i}".encode()).digest()
    return seed * (1 + seed[0] * 16 + seed[1] % 16)  # 32 B .. 130 KiB, known to the test


def main() -> None:
    root, tag, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    for i in range(10_000):
        data = content(tag, i)
        name = f"{tag}-f{i}"
        try:
            with open(os.path.join(root, name), "wb") as f:
                for off in range(0, len(data), 65536):
                    f.write(data[off : off + 65536])
            print(f"closed {name}", flush=True)
            if rng.random() < 0.3:
                os.rename(os.path.join(root, name), os.path.join(root, f"{tag}-r{i}"))
                print(f"renamed {name}", flush=True)
        except OSError:
            return  # the daemon is gone


if __name__ == "__main__":
    main()

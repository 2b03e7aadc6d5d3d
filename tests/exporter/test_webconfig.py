"""Basic-auth checks as exporter-toolkit makes them: unknown users cost a bcrypt check too,
checks run one at a time, and the cache of verified pairs is bounded."""

from __future__ import annotations

import statistics
import threading
import time

import bcrypt

from exporter import webconfig
from exporter.webconfig import VERIFIED_CACHE_SIZE, load_web_config


def write_users(path, users: dict[str, str], rounds: int) -> None:
    lines = ["basic_auth_users:"]
    lines += [f"  {user}: '{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()}'"
              for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")


def test_an_unknown_user_costs_a_bcrypt_check_like_a_wrong_password(tmp_path, monkeypatch):
    path = tmp_path / "web.yml"
    write_users(path, {"prometheus": "right"}, rounds=10)
    config = load_web_config(path)
    checked = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password, hashed):
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    assert config.check_password("root", "guess") is False
    assert len(checked) == 1 and checked[0].startswith(b"$2b$10$")  # a decoy of the same cost

    def seconds(user: str) -> float:
        started = time.perf_counter()
        assert config.check_password(user, "guess") is False
        return time.perf_counter() - started

    unknown = statistics.median(seconds("root") for _ in range(3))
    wrong = statistics.median(seconds("prometheus") for _ in range(3))
    assert unknown > 0.5 * wrong, (unknown, wrong)  # was 2 ms against 216 ms


def test_bcrypt_checks_run_one_at_a_time(tmp_path, monkeypatch):
    path = tmp_path / "web.yml"
    write_users(path, {"prometheus": "right"}, rounds=4)
    config = load_web_config(path)
    running, most = [0], [0]
    lock = threading.Lock()
    real_checkpw = bcrypt.checkpw

    def tracking_checkpw(password, hashed):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        try:
            return real_checkpw(password, hashed)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", tracking_checkpw)
    threads = [threading.Thread(target=config.check_password, args=("prometheus", f"no{i}"))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1


def test_the_cache_of_verified_pairs_is_bounded(tmp_path, monkeypatch):
    users = {f"user{i}": f"password{i}" for i in range(VERIFIED_CACHE_SIZE + 30)}
    path = tmp_path / "web.yml"
    write_users(path, users, rounds=4)
    config = load_web_config(path)
    for user, password in users.items():
        assert config.check_password(user, password)
    assert len(config._verified) == VERIFIED_CACHE_SIZE
    calls = []
    monkeypatch.setattr(bcrypt, "checkpw", lambda *args: calls.append(args) or True)
    assert config.check_password("user129", "password129")  # recent: from the cache
    assert calls == []
    assert webconfig.VERIFIED_CACHE_SIZE == 100  # exporter-toolkit's cacheSize

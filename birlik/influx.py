"""A small client for InfluxDB's v1 HTTP API: ``/ping``, ``/write`` (line protocol) and
``/query`` (InfluxQL).

InfluxDB 1.x serves this API natively; 2.x and 3.x serve it for compatibility, with a
token (``Authorization: Token ...``) in place of a user name and password. The platform uses
only this API so that what the tests exercise against Debian's InfluxDB 1.6.7 is what runs
against a newer server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx


class InfluxError(Exception):
    """InfluxDB could not be reached or answered with an error.

    Three kinds, which the ingest treats differently: :class:`InfluxUnavailable` (the server is
    away or failing: retry), :class:`InfluxRefused` (the server is up but refuses the request
    for a reason an operator must fix: retry, and say so), :class:`InfluxRejected` (the data
    itself is refused: isolate the bad points).
    """


class InfluxUnavailable(InfluxError):
    """Transient: connection refused, time-out, or a 5xx answer. Retrying may succeed."""


class InfluxRefused(InfluxError):
    """The server refused the request for a reason that is not the data: 401/403 (credentials),
    404 (no such database), 429 (rate limit), 413 (body too large) and other 4xx but 400.

    The same data may well be accepted once an operator fixes the cause (or the batch is
    smaller, for 413): the points are not bad, so they must not be discarded.
    """

    def __init__(self, status: int, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def hint(self) -> str:
        """What an operator should look at."""
        return {
            401: "InfluxDB refuses the credentials: check influx.token or influx.username/password",
            403: "the credentials may not write to this database: check the token's or user's permissions",
            404: "the database does not exist (dropped?): create it, or check influx.database",
            413: "the request body is too large for the server",
            429: "InfluxDB is rate-limiting writes",
        }.get(self.status, "InfluxDB refused the request")


class InfluxRejected(InfluxError):
    """The server refused the data itself (HTTP 400, e.g. a partial write or a type conflict):
    retrying the same points will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class InfluxSettings:
    url: str = "http://127.0.0.1:8086"
    database: str = "birlik"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    timeout_s: float = 10.0

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def auth(self) -> httpx.BasicAuth | None:
        """User name and password travel in an ``Authorization: Basic`` header, never in the URL."""
        if self.username and not self.token:
            return httpx.BasicAuth(self.username, self.password or "")
        return None


@dataclass(slots=True)
class Series:
    """One series of a query answer: ``columns`` name the entries of each row."""

    name: str
    columns: list[str]
    values: list[list[Any]]
    tags: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.values]


def _parse_query(body: dict[str, Any]) -> list[list[Series]]:
    """Series per statement; raises for a statement that failed."""
    if "error" in body:
        raise InfluxRejected(400, str(body["error"]))
    out: list[list[Series]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise InfluxRejected(400, str(result["error"]))
        out.append(
            [
                Series(s.get("name", ""), s.get("columns", []), s.get("values", []), s.get("tags") or {})
                for s in result.get("series", [])
            ]
        )
    return out


def _check(response: httpx.Response) -> None:
    status = response.status_code
    if status >= 500:
        raise InfluxUnavailable(f"HTTP {status}: {response.text[:300]}")
    if status >= 400:
        try:
            body = response.json()
            message = str(body.get("error", response.text)) if isinstance(body, dict) else response.text
        except ValueError:
            message = response.text
        if status == 400:
            raise InfluxRejected(status, message[:2000])
        retry_after: float | None = None
        try:
            retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
        raise InfluxRefused(status, message[:500], retry_after_s=retry_after)


def _join(lines: Iterable[str] | str | bytes) -> bytes:
    if isinstance(lines, bytes):
        return lines
    if isinstance(lines, str):
        return lines.encode()
    return "\n".join(lines).encode()


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxClient:
    """Blocking client, for tools, tests and the analytics worker."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._http = httpx.Client(
            base_url=settings.url, headers=settings.auth_headers(), auth=settings.auth(), timeout=settings.timeout_s
        )

    def __enter__(self) -> InfluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"{self.settings.url}: {exc!r}") from exc
        _check(response)
        return response

    def ping(self) -> str:
        """The server's version; raises :class:`InfluxUnavailable` when it does not answer."""
        return str(self._request("GET", "/ping").headers.get("X-Influxdb-Version", "unknown"))

    def write(self, lines: Iterable[str] | str | bytes, *, precision: str = "ms", database: str | None = None) -> None:
        self._request(
            "POST",
            "/write",
            params={"db": database or self.settings.database, "precision": precision},
            content=_join(lines),
        )

    def query(self, q: str, *, database: str | None = None, epoch: str = "ms") -> list[Series]:
        """Run InfluxQL; the series of the last statement."""
        results = self.query_all(q, database=database, epoch=epoch)
        return results[-1] if results else []

    def query_all(self, q: str, *, database: str | None = None, epoch: str = "ms") -> list[list[Series]]:
        method = "POST" if _is_write_statement(q) else "GET"
        params = {"q": q, "db": database or self.settings.database, "epoch": epoch}
        return _parse_query(self._request(method, "/query", params=params).json())

    def create_database(self, name: str | None = None) -> None:
        self.query_all(f"CREATE DATABASE {quote_ident(name or self.settings.database)}")

    def drop_database(self, name: str) -> None:
        self.query_all(f"DROP DATABASE {quote_ident(name)}")

    def count_readings(self, measurement: str = "telemetry") -> int:
        """How many values of all fields are stored (readings, not points)."""
        series = self.query(f"SELECT COUNT(*) FROM {quote_ident(measurement)}")
        return sum(v for v in series[0].values[0][1:] if v) if series and series[0].values else 0

    def count(self, measurement: str, field: str, where: str = "") -> int:
        """How many values of ``field`` are stored (0 if none)."""
        q = f"SELECT COUNT({quote_ident(field)}) FROM {quote_ident(measurement)}"
        if where:
            q += f" WHERE {where}"
        series = self.query(q)
        return int(series[0].values[0][1]) if series and series[0].values else 0


class AsyncInfluxClient:
    """Non-blocking client, for the ingest service."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(
            base_url=settings.url,
            headers=settings.auth_headers(),
            auth=settings.auth(),
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    async def __aenter__(self) -> AsyncInfluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"{self.settings.url}: {exc!r}") from exc
        _check(response)
        return response

    async def ping(self) -> str:
        return str((await self._request("GET", "/ping")).headers.get("X-Influxdb-Version", "unknown"))

    async def write(self, lines: Iterable[str] | str | bytes, *, precision: str = "ms") -> None:
        await self._request(
            "POST", "/write", params={"db": self.settings.database, "precision": precision}, content=_join(lines)
        )

    async def query(self, q: str, *, epoch: str = "ms") -> list[Series]:
        method = "POST" if _is_write_statement(q) else "GET"
        params = {"q": q, "db": self.settings.database, "epoch": epoch}
        results = _parse_query((await self._request(method, "/query", params=params)).json())
        return results[-1] if results else []

    async def create_database(self) -> None:
        await self.query(f"CREATE DATABASE {quote_ident(self.settings.database)}")


_WRITE_VERBS = ("CREATE", "DROP", "ALTER", "DELETE", "GRANT", "REVOKE", "KILL", "SELECT INTO")


def _is_write_statement(q: str) -> bool:
    head = q.lstrip().upper()
    return head.startswith(_WRITE_VERBS) or " INTO " in head


def split_batches(lines: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(lines), size):
        yield lines[start : start + size]

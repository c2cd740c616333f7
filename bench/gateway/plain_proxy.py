"""A plain aiohttp proxy: the baseline a user writes in an afternoon.

Run by ``bench/gateway/run.py`` (and by the routing-quality bench) as a contender:

    python bench/gateway/plain_proxy.py --port P --policy round_robin|least_load URL [URL...]

Every ``/v1/*`` request goes to one of the URLs, body and answer passed through as they come
(streams chunk by chunk, not re-framed), over one client session. ``round_robin`` takes the
URLs in turn; ``least_load`` takes the one with the fewest requests in flight from this proxy
(ties in turn). ``/health`` is answered here; ``GET /v1/models`` is asked of a replica.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence

import uvloop
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

# Headers that describe one hop, not the message: never forwarded either way.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "host",
        "upgrade",
        "te",
        "trailer",
        "proxy-connection",
        "content-encoding",
    }
)

SESSION = web.AppKey("session", ClientSession)


class Balancer:
    """Picks a replica URL and counts this proxy's requests in flight per URL."""

    def __init__(self, urls: Sequence[str], policy: str) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.in_flight = dict.fromkeys(self.urls, 0)
        self._turn: Iterator[int] = itertools.cycle(range(len(self.urls)))
        self.pick: Callable[[], str] = (
            self._round_robin if policy == "round_robin" else self._least_load
        )

    def _round_robin(self) -> str:
        return self.urls[next(self._turn)]

    def _least_load(self) -> str:
        start = next(self._turn)
        ordered = self.urls[start:] + self.urls[:start]
        return min(ordered, key=self.in_flight.__getitem__)


def _forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}


def create_app(balancer: Balancer) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def proxy(request: web.Request) -> web.StreamResponse:
        url = balancer.pick()
        body = await request.read()
        balancer.in_flight[url] += 1
        try:
            async with request.app[SESSION].request(
                request.method,
                url + request.rel_url.path_qs,
                data=body,
                headers=_forwarded(request.headers),
            ) as upstream:
                content_type = upstream.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    return web.Response(
                        status=upstream.status,
                        body=await upstream.read(),
                        headers=_forwarded(upstream.headers),
                    )
                answer = web.StreamResponse(status=upstream.status)
                answer.headers.update(_forwarded(upstream.headers))
                await answer.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await answer.write(chunk)
                await answer.write_eof()
                return answer
        except ClientError as error:
            return web.json_response(
                {"error": {"message": f"upstream {url}: {error}", "type": "bad_gateway"}},
                status=502,
            )
        finally:
            balancer.in_flight[url] -= 1

    async def session(app: web.Application) -> AsyncIterator[None]:
        timeout = ClientTimeout(total=None, sock_connect=5)
        async with ClientSession(connector=TCPConnector(limit=0), timeout=timeout) as client:
            app[SESSION] = client
            yield

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/v1/{tail:.*}", proxy)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--policy", choices=("round_robin", "least_load"), default="round_robin")
    p.add_argument("urls", nargs="+", metavar="URL")
    args = p.parse_args(argv)
    web.run_app(
        create_app(Balancer(args.urls, args.policy)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()

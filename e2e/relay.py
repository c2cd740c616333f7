"""A TCP relay: accept on one address, connect to another, copy bytes both ways.

Started by `cluster.py` with the real node (`node.py`): the API server listens on
127.0.0.1 only, and pods, in their own network namespaces, reach it at the node's
bridge address, where this relay listens. TLS passes through untouched, so pods
verify the API server's own certificate (it names the bridge address).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then pass the end on (a half-close stays a half-close)."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def serve(listen: str, to: str) -> None:
    target_host, target_port = _split(to)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                target_host, target_port
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        for each in (writer, upstream_writer):
            each.close()

    host, port = _split(listen)
    server = await asyncio.start_server(relay, host, port)
    print(f"relaying {listen} to {to}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port to accept on")
    parser.add_argument("--to", required=True, help="host:port to connect to")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.to))


if __name__ == "__main__":
    main()

"""aiohttp client of the benchmarks, written the way the talk does.

    /usr/bin/python3 aiohttp_get.py URL N LIMIT [--hold SECONDS] [--discard]

N GETs of URL through one ClientSession whose TCPConnector allows LIMIT
connections, all gathered at once (so N - LIMIT wait queued in the
connector); each answer's status is checked and its body decoded as JSON.
gather returns every decoded document; --discard returns None instead.
--hold stops after SECONDS whatever is still in flight: the memory
benchmarks read the peak RSS while requests wait on a slow server.
Prints "RESULT requests=N finished=F errors=E".
"""
import argparse
import asyncio
import os
import sys

import aiohttp


async def get_json(session, url, discard):
    async with session.get(url) as response:
        response.raise_for_status()
        document = await response.json()
        return None if discard else document


async def main(url, n, limit, hold, discard):
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(get_json(session, url, discard)) for _ in range(n)]
        if hold is not None:
            await asyncio.sleep(hold)
            finished = sum(1 for t in tasks if t.done())
            errors = sum(1 for t in tasks if t.done() and t.exception())
            print(f"RESULT requests={n} finished={finished} errors={errors}", flush=True)
            os._exit(0)  # leave the rest in flight: the process ends here
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = sum(1 for r in results if isinstance(r, BaseException))
    print(f"RESULT requests={n} finished={n} errors={errors}")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("n", type=int)
    parser.add_argument("limit", type=int)
    parser.add_argument("--hold", type=float)
    parser.add_argument("--discard", action="store_true")
    args = parser.parse_args()
    sys.exit(1 if asyncio.run(main(args.url, args.n, args.limit, args.hold, args.discard)) else 0)

"""The talk's scenario in Python, as its notebook writes it.

    /usr/bin/python3 aiohttp_videos.py API_URL MODE

Fetch 100 video ids, then the 100 videos. MODE: sequential (requests.get per
video), gather (aiohttp, limit_per_host=100: the overloaded server) or
limit10 (limit_per_host=10: the server's capacity, about 2.0 s).
Prints "RESULT seconds=S videos=N", S timing the 100 video requests only.
"""
import asyncio
import sys
import time

import aiohttp
import requests


def get_video(api_url, video_id):
    response = requests.get(f"{api_url}/videos/{video_id}")
    response.raise_for_status()
    return response.json()


async def get_video_async(api_url, video_id, session):
    async with session.get(f"{api_url}/videos/{video_id}") as response:
        response.raise_for_status()
        return await response.json()


async def fetch_all_videos(api_url, video_ids, limit_per_host=10):
    connector = aiohttp.TCPConnector(limit_per_host=limit_per_host)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [get_video_async(api_url, video_id, session) for video_id in video_ids]
        return await asyncio.gather(*tasks)


def main(api_url, mode):
    response = requests.get(f"{api_url}/videos?n=100")
    response.raise_for_status()
    valid_ids = response.json()
    started = time.monotonic()
    if mode == "sequential":
        videos = [get_video(api_url, video_id) for video_id in valid_ids]
    else:
        limit = {"gather": 100, "limit10": 10}[mode]
        videos = asyncio.run(fetch_all_videos(api_url, valid_ids, limit))
    print(f"RESULT seconds={time.monotonic() - started:.4f} videos={len(videos)}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("sequential", "gather", "limit10"):
        sys.exit("usage: aiohttp_videos.py API_URL sequential|gather|limit10")
    main(sys.argv[1], sys.argv[2])

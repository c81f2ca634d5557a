-- Retries: a session's `retry` policy sends a request again, after a
-- backoff, when its status or its failure is worth another try.
-- (retry = 3 is the defaults with 3 attempts; a request's own `retry`
-- replaces the session's.)
--
--   lua5.4 examples/recipes/retries.lua HTTPBIN_URL
local avideo = require "avideo"

local URL = arg[1] or os.getenv("HTTPBIN_URL") or "http://127.0.0.1:8080"

local s <close> = avideo.session {
  base_url = URL,
  retry = { attempts = 3, statuses = { 503 }, backoff = 0.05, max_backoff = 1 },
}

-- a 503 is tried 3 times; the last response is returned as it is
local r = s:get("/status/503")
print(("GET 503: status %d after %d retries"):format(r.status, r.retries))

-- a success needs none
r = s:get("/status/200")
print(("GET 200: status %d after %d retries"):format(r.status, r.retries))

-- a POST is not among the default methods (GET, HEAD, PUT, DELETE,
-- OPTIONS): it is sent once
r = s:post("/status/503")
print(("POST 503: status %d after %d retries"):format(r.status, r.retries))

-- a refused connection is retried too (on = {"connect", "timeout",
-- "reset"} by default), then raised with err.retries (nothing listens on
-- port 1 here)
local _, err = pcall(s.get, s, "http://127.0.0.1:1/")
print(("GET to a closed port: %s error after %d retries"):format(err.kind, err.retries))

-- refresh.lua - POST /token?grant_type=refresh_token where every request presents a
-- refresh token never used before: each thread keeps the tokens of its sessions
-- (BENCH_REFRESH_TOKENS, one a line, one session per connection, shared out between
-- threads), takes one for each request and puts back the new one that the response
-- carries. wrk keeps one request in flight per connection, so a thread never needs
-- more tokens than it has connections.
--
-- Fixture mode (BENCH_COLLECT=PREFIX, BENCH_COLLECT_TARGET=N, BENCH_DONE_DIR=DIR): each
-- thread also writes the access token of every response to PREFIX.<id> and stops after
-- N of them, leaving DIR/done.<id>; run.sh uses it to mint never-presented tokens.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

local function format(token)
  return wrk.format("POST", "/token?grant_type=refresh_token",
    { ["Content-Type"] = "application/json" }, '{"refresh_token":"' .. token .. '"}')
end

function init(args)
  local nth = tonumber(os.getenv("BENCH_THREADS")) or 1
  free = {}
  local k = 0
  for line in io.lines(os.getenv("BENCH_REFRESH_TOKENS")) do
    if #line > 0 then
      if k % nth == id then free[#free + 1] = line end
      k = k + 1
    end
  end
  ok, bad, starved, unparsed = 0, 0, 0, 0
  verify_call = (id == 0) -- wrk's check of the request, never sent: must not use a token
  local prefix = os.getenv("BENCH_COLLECT")
  if prefix then
    collect_fh = io.open(prefix .. "." .. id, "w")
    collect_target = tonumber(os.getenv("BENCH_COLLECT_TARGET")) or 1
    collected = 0
    donefile = os.getenv("BENCH_DONE_DIR") .. "/done." .. id
  end
end

local function collect(body)
  local at = body:match('"access_token":"([^"]+)"')
  if not at then return end
  collect_fh:write(at, "\n")
  collected = collected + 1
  if collected >= collect_target then
    collect_fh:close()
    collect_fh = nil
    local f = io.open(donefile, "w"); f:write("done\n"); f:close()
    wrk.thread:stop()
  end
end

function request()
  if verify_call then
    verify_call = false
    return format(free[#free] or "none")
  end
  local token = table.remove(free)
  if not token then
    starved = starved + 1 -- should not happen; the server will answer 400 and it shows
    token = "starved"
  end
  return format(token)
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token":"([^"]+)"')
    if token then
      ok = ok + 1
      free[#free + 1] = token
      if collect_fh then collect(body) end
    else
      unparsed = unparsed + 1
    end
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local o, b, s, u = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
    s = s + t:get("starved")
    u = u + t:get("unparsed")
  end
  io.write(string.format("BENCH refresh_ok=%d refresh_non200=%d refresh_starved=%d refresh_unparsed=%d\n",
    o, b, s, u))
end

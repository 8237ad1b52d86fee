-- login.lua - POST /token?grant_type=password for the users of BENCH_USERS
-- ("email<TAB>password" lines), round-robin, threads starting at different users.
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  threads[#threads + 1] = thread
end

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

function init(args)
  reqs = {}
  for line in io.lines(os.getenv("BENCH_USERS")) do
    local email, password = line:match("^([^\t]+)\t(.+)$")
    if email then
      reqs[#reqs + 1] = wrk.format("POST", "/token?grant_type=password",
        { ["Content-Type"] = "application/json" },
        '{"email":' .. json_str(email) .. ',"password":' .. json_str(password) .. '}')
    end
  end
  i = id % #reqs
  ok, bad = 0, 0
end

function request()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
  end
  io.write(string.format("BENCH login_ok=%d login_non200=%d\n", o, b))
end

-- wrk script: send prepared requests, one per line of a file, spread over wrk's threads.
-- wrk -s requests.lua URL -- FILE THREADS METHOD
--   METHOD POST: each line is a signed event body for POST /v1/events (each sent once, then the thread
--                starts over: a second send of the same event is a replay and answers 200)
--   METHOD GET:  each line is a path to GET
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  local path, threads = args[1], tonumber(args[2])
  method = args[3]
  items = {}
  local i = 0
  for line in io.lines(path) do
    if i % threads == id then
      items[#items + 1] = line
    end
    i = i + 1
  end
  pos = 0
end

function request()
  pos = pos + 1
  if pos > #items then
    pos = 1
    if method == "POST" and not warned then
      -- the rate wrk reports from here on counts replays (200, nothing appended) as requests
      io.stderr:write("requests.lua: thread " .. id .. " ran out of prepared events; what it sends now are " ..
                      "replays, not appends: prepare more events or run shorter\n")
      warned = true
    end
  end
  if method == "POST" then
    return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, items[pos])
  end
  return wrk.format("GET", items[pos])
end

-- wrk script: HTTP/1.1 pipelining. Each write carries `depth` requests (the first script
-- argument, 16 by default: `wrk ... -s perf/pipeline.lua <url> -- 16`); wrk counts the requests
-- in the string request() returns, so requests/s and latency stay per request.
local depth = 16
local batch

function init(args)
  depth = tonumber(args[1]) or depth
  local requests = {}
  for i = 1, depth do
    requests[i] = wrk.format()
  end
  batch = table.concat(requests)
end

function request()
  return batch
end

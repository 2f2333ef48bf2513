-- wrk script: every request POSTs a body of `size` bytes (the first script argument, 8 MiB by
-- default: `wrk ... -s perf/upload.lua <url> -- 8388608`) to /upload, which reads and drops it and
-- answers with its length. The request is built once; wrk writes it in as many writes as the
-- socket takes.
local size = 8 * 1024 * 1024
local upload

function init(args)
  size = tonumber(args[1]) or size
  local headers = { ["Content-Type"] = "application/octet-stream" }
  upload = wrk.format("POST", nil, headers, string.rep("x", size))
end

function request()
  return upload
end

-- Failures show in wrk's non-2xx count: /upload answers 200 only once it has read the whole body,
-- and Kestrel answers 413 to a body over its MaxRequestBodySize (30,000,000 bytes).

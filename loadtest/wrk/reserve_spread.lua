-- wrk: durable reservations of one unit spread at random over SKUs spread-0 .. spread-9999.
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("ADMIN_TOKEN"),
}
local body = '{"qty":1,"ttl_seconds":3600}'

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local path = "/v1/skus/spread-" .. math.random(0, 9999) .. "/reservations"
  return wrk.format("POST", path, headers, body)
end

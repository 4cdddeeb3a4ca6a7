-- POST /api/cart/add as bench/cart-add.lua, each request with an
-- Idempotency-Key of its own (abab -s): every add is made, through the
-- keyed path (one script in Redis, the key table in SQLite).
local n = 0
local prefix = tostring(math.random(1, 1e9))

request = function()
  n = n + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["User-Id"] = "bench",
    ["Idempotency-Key"] = prefix .. "-" .. n,
  }, '{"productId": 1, "quantity": 1}')
end

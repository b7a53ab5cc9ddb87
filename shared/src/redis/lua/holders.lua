-- holders: the field of a dedup key in the dedup holders HASH (Keys::dedup_holders), shared by
-- the scripts that release dedup keys and take them again on a retry (apply_transition,
-- release_holder; submit gets the same bytes from its caller, Keys::dedup_field); defines a
-- function only and touches no key itself. A field is the key's digest (the 24 hex
-- digits that end the key's name, Keys::dedup) as its 12 bytes: a field of 12 bytes takes a
-- 16-byte allocation, one of 24 a 32-byte one. Holders taken by the previous version are
-- fields of the 24 hex digits, which these scripts still find and release (and submit finds).

-- The 12-byte field of the dedup key named `key` (its last 24 characters, hex digits); nil
-- for a key named before dedup keys were digests (`{ns}:dedup:<dag>:<key>`), which has none.
local function holder_field(key)
  local hex, out = string.sub(key, -24), {}
  if #hex ~= 24 then
    return nil
  end
  for j = 1, 24, 6 do
    local n = tonumber(string.sub(hex, j, j + 5), 16)
    if not n or n < 0 or n >= 16777216 then
      return nil
    end
    out[#out + 1] = string.char(math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  end
  return table.concat(out)
end

/* l_crypto.c: mcp.crypto, the few primitives the agent needs for API tokens,
 * through GnuTLS: SHA-256, random bytes from the key-grade generator, and a
 * comparison whose time does not depend on where two strings differ. */
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "bindings.h"

#define RANDOM_MAX 1024

static void push_hex(lua_State *L, const unsigned char *b, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char out[2 * RANDOM_MAX];
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    lua_pushlstring(L, out, 2 * n);
}

/* mcp.crypto.sha256(s) -> the SHA-256 of s, 64 lowercase hex digits. */
static int l_crypto_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char digest[32];
    int rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, s, len, digest);
    if (rc < 0)
        return luaL_error(L, "mcp.crypto.sha256: %s", gnutls_strerror(rc));
    push_hex(L, digest, sizeof digest);
    return 1;
}

/* mcp.crypto.random_hex(nbytes) -> nbytes random bytes as 2*nbytes hex
 * digits, from GnuTLS's generator for keys. */
static int l_crypto_random_hex(lua_State *L)
{
    lua_Number n = luaL_checknumber(L, 1);
    if (n != (lua_Number)(int)n || n < 1 || n > RANDOM_MAX)
        return luaL_error(L, "mcp.crypto.random_hex: expected a whole number of bytes "
                             "from 1 to %d, got %f", RANDOM_MAX, n);
    unsigned char buf[RANDOM_MAX];
    int rc = gnutls_rnd(GNUTLS_RND_KEY, buf, (size_t)n);
    if (rc < 0)
        return bind_fail(L, "mcp.crypto.random_hex", "%s", gnutls_strerror(rc));
    push_hex(L, buf, (size_t)n);
    gnutls_memset(buf, 0, sizeof buf);
    return 1;
}

/* mcp.crypto.equal(a, b) -> whether the strings are equal, in a time that
 * depends on their length only. Lengths are not secret (every token hash
 * has 64 digits), so strings of different lengths are unequal at once. */
static int l_crypto_equal(lua_State *L)
{
    size_t la, lb;
    const unsigned char *a = (const unsigned char *)luaL_checklstring(L, 1, &la);
    const unsigned char *b = (const unsigned char *)luaL_checklstring(L, 2, &lb);
    if (la != lb) {
        lua_pushboolean(L, 0);
        return 1;
    }
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < la; i++)
        diff |= a[i] ^ b[i];
    lua_pushboolean(L, diff == 0);
    return 1;
}

static const luaL_Reg crypto_funcs[] = {
    { "sha256", l_crypto_sha256 },
    { "random_hex", l_crypto_random_hex },
    { "equal", l_crypto_equal },
    { NULL, NULL },
};

int l_crypto_open(lua_State *L)
{
    lua_newtable(L);
    luaL_register(L, NULL, crypto_funcs);
    return 1;
}

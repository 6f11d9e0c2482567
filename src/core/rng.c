/* rng.c: the random number generators: counter-based (SplitMix64 finaliser) and sequential (xoshiro256**). */
#include <math.h>
#include <stdint.h>

#include "core.h"

uint64_t wl_hash64(uint64_t seed, uint64_t counter) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (counter + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void wl_rng_seed(wl_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = wl_hash64(seed, (uint64_t)i);
}

uint64_t wl_rng_next(wl_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float wl_rng_uniform(wl_rng *rng) { return (float)(wl_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

float wl_rng_range(wl_rng *rng, float lo, float hi) { return lo + (hi - lo) * wl_rng_uniform(rng); }

float wl_rng_normal(wl_rng *rng) {
    /* Box-Muller in double; u1 in (0, 1] so the log is finite. */
    double u1 = ((double)(wl_rng_next(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(wl_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

// rng.js: a small seeded generator (SplitMix32 seeding an sfc32 state) so shuffling and sampling are
// reproducible for a given seed on every platform.

/** A deterministic PRNG with a serialisable state. */
export class Rng {
  /** @param {number} seed any integer (taken modulo 2^32) */
  constructor(seed = 0) {
    let s = seed >>> 0;
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    /** @type {number[]} */
    this.state = [next(), next(), next(), next() | 1];
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  /** @returns {number} uniform 32-bit unsigned integer */
  nextU32() {
    const st = this.state;
    let [a, b, c, d] = st;
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    st[0] = a >>> 0;
    st[1] = b;
    st[2] = c;
    st[3] = d;
    return t;
  }

  /** @returns {number} uniform in [0, 1) with 32 random bits */
  next() {
    return this.nextU32() / 4294967296;
  }

  /** @param {number} n @returns {number} uniform integer in [0, n) */
  int(n) {
    return Math.floor(this.next() * n);
  }

  /**
   * Fisher-Yates shuffle in place.
   * @template {unknown[] | Int32Array | Uint32Array} A
   * @param {A} array
   * @returns {A} the same array
   */
  shuffle(array) {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = array[i];
      array[i] = array[j];
      array[j] = t;
    }
    return array;
  }

  /** @returns {number[]} state to restore with Rng.fromState */
  save() {
    return this.state.slice();
  }

  /** @param {number[]} state */
  static fromState(state) {
    const r = new Rng(0);
    r.state = state.map((x) => x >>> 0);
    return r;
  }
}

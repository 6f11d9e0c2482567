// Hashing and encryption helpers on WebCrypto (plus @noble/hashes for SHA-256 over streams, which
// crypto.subtle.digest cannot do incrementally). Used by fetch/http.js (pins) and store.js (encryption at rest).

import { sha256 } from '@noble/hashes/sha2';
import { bytesToHex } from '@noble/hashes/utils';
import { IntegrityError, InvalidArgumentError, PassphraseError, UnsupportedError } from '../errors.js';

/** OWASP's floor for PBKDF2-HMAC-SHA256 at the time the minimum was set; lower counts are refused. */
export const PBKDF2_MIN_ITERATIONS = 310_000;
/** OWASP's current recommendation for PBKDF2-HMAC-SHA256; the work happens once per store opening. */
export const PBKDF2_DEFAULT_ITERATIONS = 600_000;

const VERIFIER_PLAINTEXT = new TextEncoder().encode('weblora key check v1');
const VERIFIER_AAD = 'weblora/key-verifier';

/**
 * @typedef {object} Sealed AES-GCM output as stored: a fresh IV per message and the ciphertext with its tag.
 * @property {Uint8Array} iv 12 bytes
 * @property {Uint8Array} data ciphertext followed by the 16-byte tag
 */

/**
 * @typedef {object} KeyRecord what is stored to re-derive and check the key; holds nothing secret.
 * @property {'pbkdf2-sha256/aes-gcm-256'} scheme
 * @property {Uint8Array} salt 16 random bytes
 * @property {number} iterations
 * @property {Sealed} verifier a known plaintext sealed with the derived key
 * @property {number} created ms since the epoch
 */

/**
 * Types a view for WebCrypto (whose typings want an ArrayBuffer-backed view; ours always are).
 * @param {Uint8Array} bytes
 * @returns {BufferSource}
 */
function buf(bytes) {
  return /** @type {BufferSource} */ (bytes);
}

/** @returns {SubtleCrypto} */
export function subtle() {
  const s = globalThis.crypto?.subtle;
  // Browsers expose crypto.subtle only in secure contexts (https, localhost).
  if (!s) throw new UnsupportedError('WebCrypto (crypto.subtle) is not available; a secure context (https) is required');
  return s;
}

/**
 * @param {number} n
 * @returns {Uint8Array}
 */
export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

/**
 * Lower-cased hex SHA-256 or a TypeError: pins come from users and typos must not pass silently.
 * @param {string} hex
 * @returns {string}
 */
export function normalizeSha256(hex) {
  const h = String(hex).trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(h)) throw new InvalidArgumentError(`sha256 must be 64 hex digits, got "${hex}"`);
  return h;
}

/**
 * One-shot SHA-256 with WebCrypto (native speed) for buffers that are already whole.
 * @param {Uint8Array} bytes
 * @returns {Promise<string>} lower-case hex
 */
export async function sha256Hex(bytes) {
  return bytesToHex(new Uint8Array(await subtle().digest('SHA-256', buf(bytes))));
}

/**
 * Incremental SHA-256 for data that arrives in chunks and is never held whole.
 * @returns {{ update(bytes: Uint8Array): void, hex(): string }}
 */
export function createSha256() {
  const h = sha256.create();
  return {
    update(bytes) { h.update(bytes); },
    hex() { return bytesToHex(h.digest()); },
  };
}

/**
 * @param {string} passphrase
 * @param {Uint8Array} salt
 * @param {number} iterations
 * @returns {Promise<CryptoKey>} a non-extractable AES-GCM-256 key
 */
export async function deriveKey(passphrase, salt, iterations) {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new InvalidArgumentError('passphrase must be a non-empty string');
  if (!Number.isInteger(iterations) || iterations < PBKDF2_MIN_ITERATIONS) {
    throw new InvalidArgumentError(`PBKDF2 iterations must be an integer >= ${PBKDF2_MIN_ITERATIONS}, got ${iterations}`);
  }
  const s = subtle();
  const material = await s.importKey('raw', new TextEncoder().encode(passphrase), 'PBKDF2', false, ['deriveKey']);
  return s.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt: buf(salt), iterations },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

/**
 * Encrypts with a fresh random IV. `aad` binds the ciphertext to where it belongs, so stored blobs cannot be
 * swapped between records without the decryption failing.
 * @param {CryptoKey} key
 * @param {Uint8Array} bytes
 * @param {string} aad
 * @returns {Promise<Sealed>}
 */
export async function seal(key, bytes, aad) {
  const iv = randomBytes(12);
  const data = await subtle().encrypt({ name: 'AES-GCM', iv: buf(iv), additionalData: new TextEncoder().encode(aad) }, key, buf(bytes));
  return { iv, data: new Uint8Array(data) };
}

/**
 * @param {CryptoKey} key
 * @param {Sealed} sealed
 * @param {string} aad must equal the one given to seal
 * @returns {Promise<Uint8Array>}
 */
export async function unseal(key, sealed, aad) {
  try {
    const plain = await subtle().decrypt(
      { name: 'AES-GCM', iv: buf(sealed.iv), additionalData: new TextEncoder().encode(aad) }, key, buf(sealed.data));
    return new Uint8Array(plain);
  } catch (cause) {
    // The key was already checked against the verifier, so a failure here means damaged or moved data.
    throw new IntegrityError(`encrypted data for ${aad} failed authentication (corrupted or tampered with)`, { cause });
  }
}

/**
 * Creates the key record for a new passphrase.
 * @param {string} passphrase
 * @param {number} [iterations]
 * @returns {Promise<{ record: KeyRecord, key: CryptoKey }>}
 */
export async function createKeyRecord(passphrase, iterations = PBKDF2_DEFAULT_ITERATIONS) {
  const salt = randomBytes(16);
  const key = await deriveKey(passphrase, salt, iterations);
  const verifier = await seal(key, VERIFIER_PLAINTEXT, VERIFIER_AAD);
  return { record: { scheme: 'pbkdf2-sha256/aes-gcm-256', salt, iterations, verifier, created: Date.now() }, key };
}

/**
 * Re-derives the key from a stored record; a wrong passphrase fails the verifier's authentication tag.
 * @param {KeyRecord} record
 * @param {string} passphrase
 * @returns {Promise<CryptoKey>}
 */
export async function unlockKeyRecord(record, passphrase) {
  if (record.scheme !== 'pbkdf2-sha256/aes-gcm-256') {
    throw new UnsupportedError(`unknown key scheme "${record.scheme}"`);
  }
  const key = await deriveKey(passphrase, record.salt, record.iterations);
  try {
    await subtle().decrypt(
      { name: 'AES-GCM', iv: buf(record.verifier.iv), additionalData: new TextEncoder().encode(VERIFIER_AAD) },
      key, buf(record.verifier.data));
  } catch (cause) {
    throw new PassphraseError('wrong passphrase for this adapter store', { cause });
  }
  return key;
}

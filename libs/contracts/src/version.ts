/**
 * The ATLAS release every service reports in discovery, health and responses.
 *
 * @module
 */

/** ATLAS's version (kept equal to the root package.json by a test). */
export const ATLAS_VERSION = "0.1.0";

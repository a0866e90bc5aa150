/**
 * Certificates for TLS origins of the tests, made at test time with Debian's
 * `openssl` (no key is committed): a CA, a certificate for localhost and
 * 127.0.0.1, and one for other.test only.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { findBinary } from "./servers.js"

/** PEM texts: the CA, then each certificate with its key. */
export interface TestCertificates {
  readonly ca: string
  /** For localhost and 127.0.0.1. */
  readonly key: string
  readonly cert: string
  /** For other.test only. */
  readonly otherKey: string
  readonly otherCert: string
}

/** Makes them in a directory removed at once. */
const make = (openssl: string): TestCertificates => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "keepalive-tls-"))
  const run = (...args: Array<string>) => execFileSync(openssl, args, { cwd: dir, stdio: "ignore" })
  try {
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=keepalive test CA")
    const leaf = (name: string, san: string) => {
      run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`)
      fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`)
      run("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`)
    }
    leaf("localhost", "DNS:localhost,IP:127.0.0.1")
    leaf("other", "DNS:other.test")
    const read = (file: string) => fs.readFileSync(path.join(dir, file), "utf8")
    return { ca: read("ca.crt"), key: read("localhost.key"), cert: read("localhost.crt"), otherKey: read("other.key"), otherCert: read("other.crt") }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * The certificates, or undefined (with a warning naming `what` skips) when
 * there is no openssl; under CI a missing openssl throws.
 */
export const testCertificates = (what: string): TestCertificates | undefined => {
  const openssl = findBinary("openssl")
  if (openssl !== undefined) return make(openssl)
  if (process.env.CI === "true") throw new Error("openssl is required under CI")
  console.warn(`${what} skipped: no openssl to make certificates`)
  return undefined
}

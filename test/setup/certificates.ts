/**
 * Certificates for TLS origins of the tests, made at test time with Debian's
 * `openssl` (no key is committed): a CA, a certificate for localhost and
 * 127.0.0.1, one for other.test only, an expired one for localhost, and a
 * client certificate for mutual TLS.
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
  /** For localhost, valid for one day in 2020. */
  readonly expiredKey: string
  readonly expiredCert: string
  /** A client certificate (mutual TLS). */
  readonly clientKey: string
  readonly clientCert: string
}

/** A minimal `openssl ca` setup: the one way to sign with a validity window in the past. */
const caConfig = `
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = .
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
copy_extensions = copy
unique_subject = no
[ anything ]
commonName = supplied
`

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
    leaf("client", "DNS:client.test")
    fs.writeFileSync(path.join(dir, "ca.cnf"), caConfig)
    fs.writeFileSync(path.join(dir, "index.txt"), "")
    fs.writeFileSync(path.join(dir, "serial"), "1000\n")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost")
    run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key", "-in", "expired.csr", "-out", "expired.crt", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z")
    const read = (file: string) => fs.readFileSync(path.join(dir, file), "utf8")
    return {
      ca: read("ca.crt"),
      key: read("localhost.key"),
      cert: read("localhost.crt"),
      otherKey: read("other.key"),
      otherCert: read("other.crt"),
      expiredKey: read("expired.key"),
      expiredCert: read("expired.crt"),
      clientKey: read("client.key"),
      clientCert: read("client.crt")
    }
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

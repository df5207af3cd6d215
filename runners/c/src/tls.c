/* Mutual TLS with OpenSSL: TLS 1.3 only, the coordinator verified against the fabric's CA
 * and its name (a DNS name, or an IP address in the certificate's IP SANs), our certificate
 * offered. SHA-256 through EVP. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runner.h"

static void openssl_reason(char *out, size_t outlen) {
    unsigned long code = ERR_get_error();
    if (code == 0) {
        snprintf(out, outlen, "no detail");
    } else {
        ERR_error_string_n(code, out, outlen);
    }
    ERR_clear_error();
}

/* A certificate outside its validity period fails here with one sentence, not later as the
 * coordinator's TLS alert. */
static int check_validity(const char *path, char *err, size_t errlen) {
    FILE *file = fopen(path, "r");
    if (!file) {
        snprintf(err, errlen, "cannot read the certificate file %s: %s", path, strerror(errno));
        return -1;
    }
    X509 *certificate = PEM_read_X509(file, NULL, NULL, NULL);
    fclose(file);
    if (!certificate) {
        snprintf(err, errlen, "%s holds no certificate", path);
        ERR_clear_error();
        return -1;
    }
    int result = 0;
    char when[64] = "";
    const ASN1_TIME *not_before = X509_get0_notBefore(certificate);
    const ASN1_TIME *not_after = X509_get0_notAfter(certificate);
    struct tm tm;
    if (X509_cmp_current_time(not_before) > 0) {
        if (ASN1_TIME_to_tm(not_before, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(err, errlen,
                 "the certificate %s is not valid until %s: check the clock, or issue it again with `heddle certs issue`",
                 path, when);
        result = -1;
    } else if (X509_cmp_current_time(not_after) < 0) {
        if (ASN1_TIME_to_tm(not_after, &tm)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(err, errlen, "the certificate %s expired at %s: issue a new one with `heddle certs issue`", path, when);
        result = -1;
    }
    X509_free(certificate);
    return result;
}

SSL_CTX *tls_client_context(const char *ca, const char *cert, const char *key, char *err, size_t errlen) {
    char reason[256];
    if (access(ca, R_OK) != 0) {
        snprintf(err, errlen, "cannot read the CA certificate file %s: %s", ca, strerror(errno));
        return NULL;
    }
    if (access(key, R_OK) != 0) {
        snprintf(err, errlen, "cannot read the private key file %s: %s", key, strerror(errno));
        return NULL;
    }
    if (check_validity(cert, err, errlen) != 0) return NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        openssl_reason(reason, sizeof reason);
        snprintf(err, errlen, "cannot make a TLS context: %s", reason);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        openssl_reason(reason, sizeof reason);
        snprintf(err, errlen, "%s holds no usable CA certificate: %s", ca, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        openssl_reason(reason, sizeof reason);
        snprintf(err, errlen, "cannot load the certificate %s: %s", cert, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        openssl_reason(reason, sizeof reason);
        snprintf(err, errlen, "cannot load the private key %s: %s", key, reason);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "the private key %s does not belong to the certificate %s", key, cert);
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL *tls_new(SSL_CTX *ctx, int fd, const char *host, char *err, size_t errlen) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        snprintf(err, errlen, "cannot start TLS");
        ERR_clear_error();
        return NULL;
    }
    unsigned char address[16];
    int is_address = inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok;
    if (is_address) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(param, host);
    } else {
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = SSL_set1_host(ssl, host) && SSL_set_tlsext_host_name(ssl, host);
    }
    if (!ok || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "cannot set up TLS for %s", host);
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

void tls_error_text(char *err, size_t errlen, const char *what, SSL *ssl, int result) {
    char reason[256];
    int code = SSL_get_error(ssl, result);
    long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
        snprintf(err, errlen, "%s: the coordinator's certificate was refused: %s", what,
                 X509_verify_cert_error_string(verify));
        ERR_clear_error();
        return;
    }
    if (code == SSL_ERROR_SYSCALL) {
        snprintf(err, errlen, "%s: %s", what, errno ? strerror(errno) : "the connection was closed");
        ERR_clear_error();
        return;
    }
    if (code == SSL_ERROR_ZERO_RETURN) {
        snprintf(err, errlen, "%s: the coordinator closed the connection", what);
        return;
    }
    openssl_reason(reason, sizeof reason);
    snprintf(err, errlen, "%s: %s", what, reason);
}

int sha256_file(int fd, uint64_t *size, uint8_t digest[32]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    static uint8_t block[1 << 16];
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, block, sizeof block);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            EVP_MD_CTX_free(ctx);
            return -1;
        }
        if (n == 0) break;
        EVP_DigestUpdate(ctx, block, (size_t)n);
        total += (uint64_t)n;
    }
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx, digest, &length);
    EVP_MD_CTX_free(ctx);
    *size = total;
    return length == 32 ? 0 : -1;
}

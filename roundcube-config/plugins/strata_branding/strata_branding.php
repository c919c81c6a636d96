<?php

/*
 * strata_branding: the reseller's brand on the webmail served under the reseller's host name.
 *
 * On every request, the host the browser asked for ($_SERVER['HTTP_HOST'], port stripped) is
 * looked up in Strata: GET <strata_branding_url>/branding?host=NAME, server to server, answers
 * the brand of the reseller that owns that host name (product name, logo, support link) or 404.
 * The plugin then sets Roundcube's product_name, skin_logo and support_url for this request.
 * An uploaded logo is fetched the same way (/branding/logo?host=NAME) and served by this plugin
 * under Roundcube's own URL (?_task=login&_action=strata-logo), so browsers never need to reach
 * Strata's admin listener.
 *
 * Answers are cached in Roundcube's temp_dir for strata_branding_ttl seconds (60), each fetch
 * has a short timeout (strata_branding_timeout, 2 s), and any failure (Strata down, a timeout,
 * a bad answer) leaves Roundcube's configured look: the login page must work during an outage
 * of anything else.  A failure is cached too, so a dead Strata does not slow every page.
 *
 * Config (config.inc.php sets it from STRATA_ADMIN_URL): strata_branding_url, e.g.
 * "http://127.0.0.1:8080"; empty turns the plugin off.
 */
class strata_branding extends rcube_plugin
{
    const LOGO_ACTION = 'strata-logo';

    private $brand = null;

    public function init()
    {
        $this->add_hook('startup', [$this, 'startup']);
    }

    public function startup($args)
    {
        $rcmail = rcmail::get_instance();
        $base = rtrim((string) $rcmail->config->get('strata_branding_url', ''), '/');
        $host = self::host_name(isset($_SERVER['HTTP_HOST']) ? $_SERVER['HTTP_HOST'] : '');
        if ($base === '' || $host === null) {
            return $args;
        }
        if ($args['action'] === self::LOGO_ACTION) {
            $this->send_logo($rcmail, $base, $host);  // exits
        }
        $brand = $this->brand($rcmail, $base, $host);
        if (!is_array($brand)) {
            return $args;
        }
        $name = isset($brand['product_name']) ? trim((string) $brand['product_name']) : '';
        if ($name !== '') {
            $rcmail->config->set('product_name', $name);
        }
        $logo = isset($brand['logo_url']) && is_string($brand['logo_url']) ? $brand['logo_url'] : '';
        if (!empty($brand['has_logo'])) {
            // Served by this plugin; the version changes with each upload (no stale cache).
            $version = preg_match('/[?&]v=([0-9]+)/', $logo, $m) ? $m[1] : '0';
            $rcmail->config->set('skin_logo',
                './?_task=login&_action=' . self::LOGO_ACTION . '&_v=' . $version);
        } elseif (preg_match('#^https?://#i', $logo)) {
            $rcmail->config->set('skin_logo', $logo);
        }
        $support = isset($brand['support_url']) ? (string) $brand['support_url'] : '';
        if (preg_match('#^https?://#i', $support)) {
            $rcmail->config->set('support_url', $support);
        }
        return $args;
    }

    /** The canonical host name in an HTTP Host value, or null (an address, or garbage). */
    public static function host_name($host)
    {
        $host = strtolower(trim((string) $host));
        if ($host === '' || $host[0] === '[') {
            return null;
        }
        $host = rtrim(preg_replace('/:[0-9]*$/', '', $host), '.');
        if (strlen($host) > 253 || !preg_match('/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/', $host)
            || filter_var($host, FILTER_VALIDATE_IP)) {
            return null;
        }
        return $host;
    }

    /** The brand of $host: an array, or false (none, or Strata did not answer). */
    private function brand($rcmail, $base, $host)
    {
        if ($this->brand !== null) {
            return $this->brand;
        }
        $cache = $this->cache_path($rcmail, 'json', $host);
        $ttl = (int) $rcmail->config->get('strata_branding_ttl', 60);
        if ($cache !== null && is_file($cache) && time() - filemtime($cache) < $ttl) {
            $decoded = json_decode((string) @file_get_contents($cache), true);
            return $this->brand = is_array($decoded) ? $decoded : false;
        }
        list($status, $body) = $this->fetch($rcmail, $base . '/branding?host=' . rawurlencode($host));
        $decoded = $status === 200 ? json_decode($body, true) : null;
        $this->brand = is_array($decoded) ? $decoded : false;
        if ($cache !== null) {
            // Written whole, then renamed: a parallel request never reads half a file.
            $tmp = $cache . '.' . getmypid();
            if (@file_put_contents($tmp, json_encode($this->brand)) !== false) {
                @rename($tmp, $cache);
            }
        }
        return $this->brand;
    }

    private function send_logo($rcmail, $base, $host)
    {
        list($status, $body, $type) = $this->fetch(
            $rcmail, $base . '/branding/logo?host=' . rawurlencode($host));
        $types = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
        if ($status === 200 && in_array($type, $types, true)) {
            header('Content-Type: ' . $type);
            header('X-Content-Type-Options: nosniff');
            header('Cache-Control: public, max-age=300');
            echo $body;
        } else {
            http_response_code(404);
            header('Content-Type: text/plain');
            echo "no logo\n";
        }
        exit;
    }

    /** [status, body, content type] of a GET, or [0, '', ''] when it fails. */
    private function fetch($rcmail, $url)
    {
        $timeout = (float) $rcmail->config->get('strata_branding_timeout', 2);
        try {
            $client = $rcmail->get_http_client([
                'timeout' => $timeout, 'connect_timeout' => $timeout, 'http_errors' => false,
                'allow_redirects' => false,
            ]);
            $response = $client->get($url);
            $type = strtolower(trim(explode(';', $response->getHeaderLine('Content-Type'))[0]));
            return [$response->getStatusCode(), (string) $response->getBody(), $type];
        } catch (\Throwable $e) {
            rcube::write_log('errors', 'strata_branding: ' . $url . ': ' . $e->getMessage());
            return [0, '', ''];
        }
    }

    private function cache_path($rcmail, $kind, $host)
    {
        $dir = (string) $rcmail->config->get('temp_dir', '');
        if ($dir === '' || !is_dir($dir) || !is_writable($dir)) {
            return null;
        }
        return rtrim($dir, '/') . '/strata_branding_' . sha1($host) . '.' . $kind;
    }
}

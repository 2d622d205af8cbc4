// Deployment settings, read at start from `config.json` served beside the
// app, so one build serves every stage (local, and each AWS stage).

export interface AppConfig {
  /** Base URL of the API, without `/v1` ("" = same origin). */
  apiUrl: string;
  /** OpenID provider: Cognito's issuer URL in AWS, the local provider locally. */
  oidcAuthority: string;
  oidcClientId: string;
  /** Scopes asked for (Cognito: "openid profile email"). */
  oidcScope?: string;
  /** Where Cognito's hosted UI signs out (Cognito has no standard end-session endpoint). */
  oidcLogoutUrl?: string;
}

export class ConfigError extends Error {}

export async function loadConfig(url = "/config.json"): Promise<AppConfig> {
  let raw: unknown;
  try {
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) throw new ConfigError(`config.json answered ${res.status}`);
    raw = await res.json();
  } catch (e) {
    throw new ConfigError(`The app's settings (config.json) could not be read: ${(e as Error).message}`);
  }
  return parseConfig(raw);
}

export function parseConfig(raw: unknown): AppConfig {
  const o = (raw ?? {}) as Record<string, unknown>;
  const text = (k: string, required: boolean) => {
    const v = o[k];
    if (v === undefined && !required) return undefined;
    if (typeof v !== "string" || (required && k !== "apiUrl" && v === "")) throw new ConfigError(`config.json: "${k}" must be a string`);
    return v;
  };
  return {
    apiUrl: (text("apiUrl", true) as string).replace(/\/+$/, ""),
    oidcAuthority: text("oidcAuthority", true) as string,
    oidcClientId: text("oidcClientId", true) as string,
    oidcScope: text("oidcScope", false),
    oidcLogoutUrl: text("oidcLogoutUrl", false),
  };
}
